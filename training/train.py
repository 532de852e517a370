"""Train a deepfake classifier on one fold of prepared crops, the DFDC winner's way.

    python -m training.train --config training/configs/cpu_demo.json --data PREPARED --fold 0 [--out DIR]
    torchrun --nproc_per_node 4 -m training.train --config training/configs/efficientnet_b7.json \
        --data PREPARED --fold 0

The other folds train; fold ``K`` validates, per video (``--fold all`` trains on every fold and
"validates" on its own training crops: the model to ship once cross-validation has measured the
recipe; take its ``last.pt``). ``--out`` (default ``runs/<config>-fold<K>``)
receives ``config.json`` (the resolved settings), ``last.pt`` (every epoch, with the optimizer, scheduler
and history: what ``--resume`` continues from), ``best.pt`` (the epoch with the lowest validation
log-loss; no optimizer state), ``best_videos.csv`` (its per-video scores), ``epoch_crops.csv`` (every
epoch's validation probability of every crop: what ``training.crossval`` scores an epoch chosen on the
other folds with), ``metrics.csv`` (one row per epoch) and ``curves.png``. Every file is written
atomically, by rank 0 only.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timm
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from timm.layers import convert_sync_batchnorm
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.contrib.logging import logging_redirect_tqdm

from models.checkpoint import CheckpointError, save_checkpoint
from models.precision import Precision
from models.statedict import weights_mismatch
from plumbing.strict import ConfigError
from models.zoo import DeepfakeClassifier, ModelConfig, build_model, default_spec
from plumbing.device import DeviceError
from plumbing.fileio import atomic_write, write_figure, write_json
from plumbing.logs import configure_logging
from preprocessing.cropspec import read_crop_entry

from . import distributed
from .augment import train_pipeline
from .config import RESUMABLE_CHANGES, RunConfig, TrainConfig, load_config
from .dataset import CropDataset, PreparedDataError
from .dropout import StructuredDropout
from .engine import predict, train_one_epoch, video_metrics
from .freeze import freeze_early
from .lifecycle import check_fresh, epoch_batches, record_epoch_scores, resume_state, resumed_scaler, write_history
from .pairs import PairSampler
from .selfblend import SelfBlend

logger = logging.getLogger("training.train")  # the same name under python -m


def make_datasets(root: str | os.PathLike, fold: int | None, config: RunConfig) -> tuple[CropDataset, CropDataset]:
    """The training crops (every fold but ``fold``, augmented as ``config.data`` says) and the
    validation crops (fold ``fold``, as the kernel sees them) of a prepared folder. ``fold=None``
    trains and validates on every crop: a check that a model can learn them, not a validation."""
    data = config.data
    dropout = StructuredDropout(**data.dropout) if data.dropout is not None else None
    train = CropDataset(root, config.model, fold, train=True, balance=data.balance, dropout=dropout,
                        pipeline=train_pipeline(config.model.input_size, **data.augment), mixup=data.mixup,
                        clip_targets=data.clip_targets, mix=data.mix, selfblend=SelfBlend(**data.selfblend),
                        seed=config.train.seed, pairs=data.pairs)
    return train, CropDataset(root, config.model, fold, train=False)


@dataclass
class Run:
    """What :func:`fit` returns: the trained ``model`` (last epoch; its EMA when enabled; eval mode)
    and the ``history`` of per-epoch metrics, also in ``metrics.csv``."""

    model: DeepfakeClassifier
    history: list[dict[str, Any]]


def fit(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_set: Dataset,
    val_set: Dataset,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    pretrained_file: str | os.PathLike | None = None,
    info: dict[str, Any] | None = None,
) -> Run:
    """Train on ``train_set``, validate on ``val_set`` every epoch, write the run's files in ``out``.

    Datasets yield dicts with ``image`` (3, S, S normalised float), ``target`` (float, 1 = fake) and
    ``video`` (id); a dataset with a ``set_epoch(n)`` method is told each new pass (to rebalance or
    reshuffle). Each epoch's validation scores go to ``epoch_crops.csv``, one row per item (with its
    ``frame`` and ``track`` where ``val_set`` is a :class:`CropDataset`). Under ``torchrun`` every
    process calls this and trains data-parallel. ``resume``
    continues the run in ``out`` from ``last.pt``; without it, ``out`` must not hold a run.
    ``info`` (data folder, fold...) is recorded in ``config.json``.
    """
    out = Path(out)
    cfg = train_config
    with distributed.session() as ctx:
        if not resume:
            check_fresh(out)
        state = _resume_state(out, model_config, cfg, ctx.world_size) if resume else None
        precision = Precision.resolve(cfg.precision, ctx.device, cfg.channels_last)
        model, ema = _models(model_config, cfg, ctx, precision, pretrained_file, state, out / "last.pt")
        crop = read_crop_entry(train_set.root) if hasattr(train_set, "root") else {}
        for each in (model, ema.module if ema is not None else model):  # its checkpoints store the crops it learns from
            each.spec = default_spec(model_config, **crop)
        freeze_early(model, cfg.freeze_stages)  # a count the encoder cannot take is refused before any work
        train_loader, val_loader = _loaders(train_set, val_set, cfg, ctx)
        iterations = cfg.iterations or len(train_loader)
        optimizer = _optimizer(cfg, model)
        scheduler = _scheduler(cfg, optimizer, cfg.epochs * iterations)
        scaler = resumed_scaler(state, precision, out)
        if state:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        net = None
        evaluated = ema.module if ema is not None else model
        history: list[dict[str, Any]] = list(state["history"]) if state else []
        step = state["step"] if state else 0
        start = state["epoch"] + 1 if state else 0
        if ctx.primary:
            write_json(out / "config.json", {
                "model": model_config.to_dict(), "train": cfg.to_dict(), **(info or {}),
                "world_size": ctx.world_size, "device": str(ctx.device), "precision": precision.name,
                "versions": {"torch": torch.__version__, "timm": timm.__version__},
            })
            logger.info("%s on %d x %s (%s): %d training and %d validation crops, %d steps per epoch, %s",
                        model_config.encoder, ctx.world_size, ctx.device, precision.name, len(train_set), len(val_set),
                        iterations, f"epochs {start}-{cfg.epochs - 1}" if start < cfg.epochs else "all epochs done")
        for epoch in range(start, cfg.epochs):
            _seed(cfg.seed, epoch, ctx.rank)
            changed = freeze_early(model, cfg.freeze_stages if epoch < cfg.freeze_epochs else 0)
            if net is None or (changed and ctx.distributed):  # DDP syncs the parameters that learn when it is made
                net = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None) \
                    if ctx.distributed else model
            lr = optimizer.param_groups[0]["lr"]
            batches = epoch_batches(train_loader, epoch, iterations)
            stats = train_one_epoch(net, batches, optimizer, scheduler, precision, scaler=scaler,
                                    clip_grad_norm=cfg.clip_grad_norm, ema=ema, step=step, total=iterations,
                                    desc=f"epoch {epoch}", map_weight=cfg.map_weight)
            step = stats["step"]
            distributed.sync_state(evaluated)
            crops = predict(evaluated, val_loader, precision, desc=f"val {epoch}")
            metrics, videos = video_metrics(crops.video, crops.target, crops.prob)
            row = {"epoch": epoch, "lr": lr, "train_loss": stats["loss"], "train_fake_share": stats["fake_share"],
                   "train_map_loss": stats["map_loss"], **{f"val_{k}": v for k, v in metrics.items()},
                   "images_per_s": stats["images_per_s"], "train_seconds": stats["seconds"]}
            best_before = min((r["val_logloss"] for r in history), default=math.inf)
            history.append(row)
            if ctx.primary:
                _save_epoch(out, evaluated, model if ema is not None else None, row, history, videos,
                            _crop_scores(crops, val_set, ctx.world_size),
                            is_best=row["val_logloss"] < best_before, cfg=cfg, step=step, world_size=ctx.world_size,
                            optimizer=optimizer, scheduler=scheduler, scaler=scaler, precision=precision.name)
                logger.info("epoch %d: lr %.3g, train loss %.4f, val balanced log-loss %.4f (real %.4f, fake %.4f), AUC %.3f, "
                            "%.1f images/s%s", epoch, lr, row["train_loss"], row["val_logloss"],
                            row["val_logloss_real"], row["val_logloss_fake"], row["val_auc"], row["images_per_s"],
                            " (best)" if row["val_logloss"] < best_before else "")
            distributed.barrier()
        return Run(evaluated.eval(), history)


def _models(model_config: ModelConfig, cfg: TrainConfig, ctx: distributed.Context, precision: Precision,
            pretrained_file: str | os.PathLike | None, state: dict[str, Any] | None,
            state_path: Path) -> tuple[nn.Module, Any]:
    """The model to train, on the device, and its EMA (or None): fresh (the same initial weights on every
    rank), or with the weights of the checkpoint ``state`` (read from ``state_path``) being resumed."""
    _seed(cfg.seed, 0, 0)
    model = build_model(model_config, pretrained=False if state else cfg.pretrained,
                        pretrained_file=None if state else pretrained_file or cfg.pretrained_file)
    if state:
        weights = state.get("train_weights", state["state_dict"])
        mismatch = weights_mismatch(model, weights)
        if mismatch:
            raise CheckpointError(f"{state_path}: weights do not fit {model_config.encoder}: {mismatch}")
        model.load_state_dict(weights, strict=True)
    if cfg.sync_bn and ctx.distributed and ctx.device.type == "cuda":
        model = convert_sync_batchnorm(model)
    model = precision.model(model)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None and state:
        ema.module.load_state_dict(state["state_dict"], strict=True)
    return model, ema


def _resume_state(out: Path, model_config: ModelConfig, cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The checkpoint to continue from, checked against the config of the run being resumed."""
    state = resume_state(out, {"model": model_config.to_dict(), "train": cfg.to_dict()}, RESUMABLE_CHANGES)
    if distributed.is_primary():
        if state.get("world_size") != world_size:
            logger.warning("%s was trained by %s processes, resuming with %d: the data order changes", out / "last.pt",
                           state.get("world_size"), world_size)
        logger.info("resuming %s after epoch %d (step %d)", out, state["epoch"], state["step"])
    return state


def _seed(seed: int, epoch: int, rank: int) -> None:
    """Seed every generator from (seed, epoch, rank): each epoch is reproducible on its own, so a resumed
    run draws what an uninterrupted one would have (DataLoader workers are seeded from torch's generator)."""
    value = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def _loaders(train_set: Dataset, val_set: Dataset, cfg: TrainConfig,
             ctx: distributed.Context) -> tuple[DataLoader, DataLoader]:
    if len(val_set) == 0:
        raise ConfigError("the validation fold holds no crops")
    if getattr(train_set, "pairs", False):  # the dataset shuffles its pairs; the sampler keeps them whole
        sampler = PairSampler(train_set, ctx.world_size, ctx.rank)
    else:
        sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    common = {"num_workers": cfg.workers, "pin_memory": ctx.device.type == "cuda"}
    train = DataLoader(train_set, cfg.batch_size, sampler=sampler, drop_last=True, **common)
    if len(train) == 0:
        raise ConfigError(f"{len(train_set)} training crops make no full batch of {cfg.batch_size} per process "
                          f"on {ctx.world_size} process(es)")
    # Validation shards the crops over the ranks without DistributedSampler's padding (no crop counted twice).
    val = DataLoader(val_set, cfg.batch_size * 2, sampler=_val_shard(len(val_set), ctx.world_size, ctx.rank), **common)
    return train, val


def _val_shard(size: int, world_size: int, rank: int) -> range:
    """The validation items rank ``rank`` scores: every ``world_size``-th from its own."""
    return range(rank, size, world_size)


def _crop_scores(crops: pd.DataFrame, val_set: Dataset, world_size: int) -> pd.DataFrame:
    """The gathered validation ``crops`` (:func:`predict`: rank after rank) in the validation set's order:
    ``video``, ``frame`` and ``track`` (a :class:`CropDataset`'s), ``label`` (0/1), ``prob``."""
    order = np.concatenate([np.asarray(_val_shard(len(crops), world_size, rank)) for rank in range(world_size)])
    crops = crops.set_axis(order).sort_index()
    where = val_set.table.iloc[val_set.order][["frame", "track"]].to_dict("list") if isinstance(val_set, CropDataset) else {}
    return pd.DataFrame({"video": crops.video.to_numpy(), **where, "label": (crops.target.to_numpy() > 0.5).astype(int),
                         "prob": crops.prob.to_numpy()})


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer,
               total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total_steps, power=cfg.poly_power)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _save_epoch(out: Path, evaluated: nn.Module, raw: nn.Module | None, row: dict[str, Any],
                history: list[dict[str, Any]], videos: pd.DataFrame, crops: pd.DataFrame, *, is_best: bool,
                cfg: TrainConfig, step: int, world_size: int, optimizer: torch.optim.Optimizer, scheduler: Any,
                scaler: torch.amp.GradScaler, precision: str) -> None:
    """Write the epoch's files; ``best.pt`` and the epoch's rows of ``epoch_crops.csv`` before ``last.pt``
    (which records the resolved ``precision``), so a kill between them only repeats the epoch."""
    common = {"epoch": row["epoch"], "metrics": row, "train": cfg.to_dict()}
    record_epoch_scores(out, row["epoch"], crops)
    if is_best:
        save_checkpoint(out / "best.pt", evaluated, **common)
        with atomic_write(out / "best_videos.csv", "w", newline="") as f:
            videos.to_csv(f, index=False)
    extra = {}
    if raw is not None:  # with EMA, the raw weights the optimizer works on
        extra["train_weights"] = {k: v.detach().cpu().contiguous() for k, v in raw.state_dict().items()}
    save_checkpoint(out / "last.pt", evaluated, **common, step=step, history=history, world_size=world_size,
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                    precision=precision, **extra)
    write_history(out, history)
    plot_curves(history, out / "curves.png")


def plot_curves(history: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Plot the training loss and the validation log-losses (left) and AUC (right) per epoch, as a PNG."""
    table = pd.DataFrame(history)
    figure = Figure(figsize=(11, 4), layout="constrained")
    loss_axes, auc_axes = figure.subplots(1, 2)
    loss_axes.plot(table.epoch, table.train_loss, "o-", label="train loss (crops, balanced BCE)")
    loss_axes.plot(table.epoch, table.val_logloss, "o-", label="val log-loss (videos, mean of real & fake)")
    loss_axes.plot(table.epoch, table.val_logloss_real, "--", label="val log-loss, real videos")
    loss_axes.plot(table.epoch, table.val_logloss_fake, "--", label="val log-loss, fake videos")
    loss_axes.set(xlabel="epoch", ylabel="log-loss", title="loss")
    best = table.epoch[table.val_logloss.idxmin()]
    loss_axes.axvline(best, color="grey", linestyle=":", label="best epoch (best.pt)")
    loss_axes.legend(fontsize="small")
    auc_axes.plot(table.epoch, table.val_auc, "o-", color="tab:green")
    auc_axes.set(xlabel="epoch", ylabel="AUC", title="validation AUC (videos)", ylim=(0, 1))
    for axes in (loss_axes, auc_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    write_figure(path, figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train a deepfake classifier on one fold of prepared crops (run under torchrun for several GPUs).")
    parser.add_argument("--config", required=True, help="JSON config with 'model', 'train' and 'data' sections "
                        "(see training/configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                        help="override a config key, validated like the file (VALUE is JSON, else a string); "
                        "repeatable, e.g. --set train.epochs=2 --set data.mixup=0.5")
    parser.add_argument("--data", required=True, help="folder written by python -m preprocessing.prepare")
    parser.add_argument("--fold", required=True, type=_fold,
                        help="the fold to validate on; the others train ('all': train on every fold and validate on "
                        "its own training crops)")
    parser.add_argument("--out", help="output folder (default: runs/<config name>-fold<K>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--pretrained-file",
                        help="local timm checkpoint of the encoder's weights (offline machines); overrides the config's "
                        "train.pretrained_file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _fold(value: str) -> int | None:
    """``--fold``: a fold number, or ``all`` (None: every fold trains)."""
    if value == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold number or 'all', not {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    out = Path(args.out or Path("runs") / f"{Path(args.config).stem}-fold{'all' if args.fold is None else args.fold}")
    try:
        config = load_config(args.config, args.overrides)
        train_set, val_set = make_datasets(args.data, args.fold, config)
        info = {"data": {"folder": str(Path(args.data).resolve()), "fold": args.fold, **config.data.to_dict()},
                "config_file": str(args.config), "overrides": args.overrides}
        with logging_redirect_tqdm():  # log lines go between the progress bars, not through them
            fit(config.model, config.train, train_set, val_set, out, resume=args.resume,
                pretrained_file=args.pretrained_file, info=info)
    except (ConfigError, CheckpointError, DeviceError, PreparedDataError) as err:
        # A DataLoader worker's error arrives with the worker's traceback: its last line is the cause.
        cause = str(err).strip().splitlines()[-1]
        logger.error("%s", cause.removeprefix(f"{type(err).__module__}.{type(err).__qualname__}: "))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
