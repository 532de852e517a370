"""Train LRNet (``models/lrnet.py``) on landmark sequences, one fold validated.

    python -m training.train_sequences --config training/configs/lrnet/scratch.json \
        --sequences SEQUENCES --fold K|all --out RUN

``SEQUENCES`` is a ``python -m preprocessing.prepare_sequences`` folder; its sequences are cut into
the model's blocks (30 frames, :meth:`LRNet.blocks`) and the videos of fold K validate while the
others train. Both GRUs learn at once, each on its own loss, as the authors train them one after the
other (``g1`` on a block's landmark positions, ``g2`` on their frame-to-frame differences): Adam,
two-class cross-entropy with real and fake blocks weighing half each (:func:`balanced_bce`), no
augmentation (the authors use none). The config (JSON, every key checked)::

    {"family": "sequence",
     "model": {...},                       # LRNetConfig; only from scratch (default: the published size)
     "train": {"init": "scratch",          # or a sequence checkpoint to start from, e.g. "weights/lrnet_ffpp.pt"
               "epochs": 100, "lr": 0.001, "batch_size": 256, "weight_decay": 0.0, "seed": 0}}

``epochs`` 0 trains nothing: the run's checkpoints are ``init`` itself, scored as it is. Written to
``RUN``: ``last.pt`` and ``best.pt`` (the epoch with the lowest balanced block log-loss on fold K; the
last with ``--fold all``), ``models.checkpoint`` sequence checkpoints that ``kernels.predict --weights``
loads (the sequences' landmark spec in them, no calibration), ``metrics.csv`` (per epoch:
``train_loss``, ``val_logloss``, ``val_auc`` of fold K's blocks) and ``epoch_crops.csv`` (per epoch,
each validation block's ``video``, ``frame``, ``track``, ``label`` and ``prob``: what
``training.crossval`` scores an epoch chosen on the other folds with). Runs on CUDA where present, else
the CPU.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import trange

from models.calibration import Calibration
from models.checkpoint import CheckpointError, load_model, save_checkpoint
from models.lrnet import LRNet, LRNetConfig
from models.metrics import label_metrics
from plumbing.device import DeviceError, default_device
from plumbing.logs import configure_logging
from plumbing.strict import ConfigError, strict_fields
from preprocessing.landmarks import LandmarkSpec
from preprocessing.prepare_sequences import read_sequence_table, read_sequences
from preprocessing.prepared import PreparedDataError

from .engine import balanced_bce
from .lifecycle import write_epoch_scores, write_history
from .train import _fold

logger = logging.getLogger("training.train_sequences")

#: A config file's ``family`` for this trainer (a frame config has none).
FAMILY = "sequence"


@dataclass(frozen=True)
class SequenceTrainConfig:
    """How to train: see the module doc. ``init``: ``"scratch"`` or a sequence checkpoint's path
    (relative to the working directory)."""

    epochs: int
    init: str = "scratch"
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if not (isinstance(self.epochs, int) and self.epochs >= 0 and isinstance(self.batch_size, int)
                and self.batch_size > 0 and self.lr > 0 and self.weight_decay >= 0 and isinstance(self.seed, int)
                and isinstance(self.init, str) and self.init):
            raise ConfigError(f"sequence train config {self}: epochs an int >= 0, batch_size an int > 0, lr > 0, "
                              "weight_decay >= 0, seed an int, init 'scratch' or a checkpoint path")


@dataclass(frozen=True)
class SequenceConfig:
    """A sequence config file: the model (from scratch) and how to train it."""

    train: SequenceTrainConfig
    model: LRNetConfig = field(default_factory=LRNetConfig)
    family: str = FAMILY


def is_sequence_config(path: str | Path) -> bool:
    """Whether the config file at ``path`` is a sequence config (its ``family``), not a frame one; a
    missing or unreadable file is not (the frame config's reader says what is wrong with it)."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(values, dict) and values.get("family") == FAMILY


def load_config(path: str | Path) -> SequenceConfig:
    """Read and check a sequence config; :class:`ConfigError` names the file and the problem."""
    try:
        values = strict_fields(SequenceConfig, json.loads(Path(path).read_text()), f"{path}")
        if values.get("family") != FAMILY:
            raise ConfigError(f"'family' must be {FAMILY!r}")
        train = SequenceTrainConfig(**strict_fields(SequenceTrainConfig, values.get("train", {}), "train"))
        if "model" in values and train.init != "scratch":
            raise ConfigError("'model' is set only from scratch: a checkpoint brings its own")
        return SequenceConfig(train, LRNetConfig.from_dict(values.get("model", {})))
    except (OSError, json.JSONDecodeError, TypeError, ConfigError) as err:
        raise ConfigError(f"{path}: {err}") from err


def load_blocks(sequences: Path, table: pd.DataFrame, model: LRNet) -> tuple[torch.Tensor, pd.DataFrame]:
    """The blocks of ``table``'s sequences (rows of ``sequences.csv``) as ``model`` cuts them
    (:meth:`LRNet.blocks`): (N, block, features) float32 and one row each: ``video``, ``frame`` (the
    block's first frame), ``track``, ``label``, ``fold``."""
    block = model.config.block
    blocks, rows = [], []
    for video, part in table.groupby("video", sort=True):
        stored = read_sequences(sequences, video)
        for landmarks, frames, run, track in zip(stored["landmarks"], stored["frames"], stored["run"], stored["track"]):
            cut = model.blocks(landmarks)
            blocks.append(cut)
            rows += [(video, int(frames[k * block]), int(track), int(part.label.iloc[0]), int(part.fold.iloc[0]))
                     for k in range(len(cut))]
    meta = pd.DataFrame(rows, columns=["video", "frame", "track", "label", "fold"])
    return (torch.cat(blocks) if blocks else torch.zeros(0, block, model.config.features)), meta


def block_probs(model: LRNet, blocks: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """``model``'s fake probability of each block (eval mode, on the model's device)."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(part.to(device)).cpu().numpy() for part in blocks.split(batch_size)]) \
            if len(blocks) else np.zeros(0)


def initial_model(config: SequenceConfig, spec: LandmarkSpec) -> LRNet:
    """The model training starts from: fresh weights, or ``init``'s (without its calibration); ``spec``: the sequences'."""
    model = LRNet(config.model) if config.train.init == "scratch" else load_model(config.train.init, family=FAMILY)
    model.calibration, model.spec = Calibration(), spec
    return model


def fit(config: SequenceConfig, sequences: Path, fold: int | None, out: Path) -> pd.DataFrame:
    """Train as the module doc says; returns the metrics table."""
    cfg = config.train
    torch.manual_seed(cfg.seed)
    spec = LandmarkSpec.from_dict(json.loads((sequences / "config.json").read_text())["spec"])
    model = initial_model(config, spec).to(default_device())
    table = read_sequence_table(sequences)
    train_table = table if fold is None else table[table.fold != fold]
    val_table = table if fold is None else table[table.fold == fold]
    x, meta = load_blocks(sequences, train_table, model)
    val_x, val_meta = load_blocks(sequences, val_table, model)
    if meta.label.nunique() < 2:
        raise PreparedDataError(f"{sequences}: the training blocks (validating on fold {fold}) hold one class only")
    y = torch.tensor(meta.label.to_numpy(), dtype=torch.float32)
    logger.info("%d training blocks (%d fake), %d validation blocks; init %s", len(x), int(y.sum()), len(val_x), cfg.init)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    device = next(model.parameters()).device
    history, scores, best = [], [], np.inf
    for epoch in trange(cfg.epochs + 1, desc=f"{out.name}", unit="epoch", leave=False, mininterval=5):
        losses = []
        if epoch:  # epoch 0: the initial model, measured
            model.train()
            for index in torch.randperm(len(x), generator=generator).split(cfg.batch_size):
                blocks, targets = x[index].to(device), y[index].to(device)
                loss = sum(balanced_bce(logits[:, 1] - logits[:, 0], targets) for logits in model.branch_logits(blocks))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item() / 2)
        probs = block_probs(model, val_x)
        scores.append(val_meta.drop(columns="fold").assign(prob=probs, epoch=epoch))
        val = label_metrics(val_meta.label, probs) if len(val_x) else {"logloss": np.nan, "auc": np.nan}
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else np.nan,
               "val_logloss": float(val["logloss"]), "val_auc": float(val["auc"])}
        history.append(row)
        extra = {"epoch": epoch, "metrics": row, "train": asdict(cfg)}
        if fold is None or epoch == 0 or row["val_logloss"] < best:  # --fold all: the last epoch
            best = row["val_logloss"]
            save_checkpoint(out / "best.pt", model, **extra)
    save_checkpoint(out / "last.pt", model, **extra)
    write_epoch_scores(out, pd.concat(scores, ignore_index=True)[["epoch", "video", "frame", "track", "label", "prob"]])
    write_history(out, history)
    return pd.DataFrame(history)


def train_fold(config: Path, sequences: Path, fold: int, run: Path) -> None:
    """Train ``config`` on ``fold`` into ``run`` (a few seconds to minutes: a run cut off starts
    again); nothing when ``run`` holds a finished run of as many epochs."""
    epochs = load_config(config).train.epochs
    if (run / "metrics.csv").is_file() and len(pd.read_csv(run / "metrics.csv")) == epochs + 1:
        logger.info("%s: finished (%d epochs), reused", run, epochs)
        return
    logger.info("%s: training %s on fold %d", run, config, fold)
    fit(load_config(config), sequences, fold, run)


def score_run(checkpoint: Path, sequences: Path, fold: int) -> pd.DataFrame:
    """The block scores (``video``, ``frame``: the block's first frame, ``track``: the face's track in
    its run, ``label``, ``prob``) of ``checkpoint`` on ``fold``'s sequences."""
    model = load_model(checkpoint, default_device(), family=FAMILY)
    table = read_sequence_table(sequences)
    blocks, meta = load_blocks(sequences, table[table.fold == fold], model)
    return meta.drop(columns="fold").assign(prob=block_probs(model, blocks))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_sequences", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="JSON sequence config (training/configs/lrnet/)")
    parser.add_argument("--sequences", required=True, type=Path,
                        help="folder written by python -m preprocessing.prepare_sequences")
    parser.add_argument("--fold", required=True, type=_fold, help="the fold to validate on; the others train ('all': every fold trains)")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<config name>-fold<K>)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    out = args.out or Path("runs") / f"{args.config.stem}-fold{'all' if args.fold is None else args.fold}"
    try:
        metrics = fit(load_config(args.config), args.sequences, args.fold, out)
    except (ConfigError, CheckpointError, DeviceError, PreparedDataError, OSError) as err:
        logger.error("%s", err)
        return 2
    logger.info("%s:\n%s", out, metrics.tail(5).to_string(index=False, float_format="%.4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
