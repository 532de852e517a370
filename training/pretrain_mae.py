"""Stage 1 of DeepfakeMAE: masked-autoencoder pretraining of a ViT on real faces, one facial part hidden.

    python -m training.pretrain_mae --config training/configs/mae/pretrain_cpu.json --data PREPARED --out DIR

Every real crop with landmarks of the prepared folder (``label`` 0: no fakes, no other labels) is
resized as the classifier sees it; one of the paper's three parts (:data:`training.partmask.PARTS`)
is hidden, plus random patches up to ``mask_ratio``, and the model reconstructs them from the rest
(:class:`training.mae.MaskedAutoencoder`). ``--out`` receives ``config.json``, ``last.pt`` (every epoch,
with the optimizer: what ``--resume`` continues from), ``encoder.pth`` (the encoder's weights, for a
fine-tuning config's ``"pretrained_file"``), ``metrics.csv``, ``loss.png`` and ``recon_epochNNN.png``
(rows of original / masked / reconstructed crops). Files are written atomically.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from models.checkpoint import CheckpointError, save_checkpoint
from models.precision import Precision
from models.statedict import weights_mismatch
from plumbing.strict import ConfigError, strict_fields
from models.zoo import ModelConfig, default_spec, to_batch
from plumbing.device import DeviceError, default_device
from plumbing.fileio import atomic_write, write_figure, write_json, write_png
from plumbing.logs import configure_logging
from preprocessing.cropspec import read_crop_entry
from preprocessing.geometry import resize_and_pad
from preprocessing.prepared import LANDMARK_COLUMNS, PreparedDataError, read_crop, read_prepared

from .config import read_config
from .engine import optimizer_step
from .lifecycle import check_fresh, epoch_batches, resume_state, resumed_scaler, write_history
from .mae import MaskedAutoencoder, unpatchify
from .partmask import PARTS, fill_mask, part_patches

logger = logging.getLogger("training.pretrain_mae")


@dataclass(frozen=True)
class PretrainConfig:
    """How to pretrain: ``epochs`` of ``iterations`` steps (None: one pass over the real crops) of
    ``batch_size`` crops; AdamW at ``lr`` with cosine decay over all steps; ``mask_ratio`` of the
    patches hidden (one facial part, then random ones); the decoder's ``decoder_width``,
    ``decoder_depth`` and ``decoder_heads``; crops flipped left-right with probability ``flip``;
    ``precision`` as :class:`models.precision.Precision` resolves it (fp16 with a gradient scaler)."""

    epochs: int = 10
    batch_size: int = 32
    iterations: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    mask_ratio: float = 0.5
    decoder_width: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    flip: float = 0.5
    precision: str = "auto"
    workers: int = 0
    seed: int = 0

    def __post_init__(self):
        if not (self.epochs > 0 and self.batch_size > 0 and (self.iterations is None or self.iterations > 0)
                and self.lr > 0 and self.weight_decay >= 0 and 0 < self.mask_ratio < 1 and 0 <= self.flip <= 1):
            raise ConfigError(f"pretrain config {self}: epochs, batch_size, iterations and lr must be > 0, "
                              "weight_decay >= 0, mask_ratio in (0, 1), flip in [0, 1]")


def load_pretrain_config(path: str | Path) -> tuple[ModelConfig, PretrainConfig]:
    """A JSON file with ``model`` and ``pretrain`` sections (``base`` layering as in training configs)."""
    values = read_config(path)
    try:
        unknown = sorted(set(values) - {"model", "pretrain"})
        if unknown or "model" not in values:
            raise ConfigError(f"sections must be 'model' and 'pretrain', got {sorted(values)}")
        return ModelConfig.from_dict(values["model"]), PretrainConfig(
            **strict_fields(PretrainConfig, values.get("pretrain", {}), "pretrain config"))
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{path}: {err}") from None


class RealFaces(Dataset):
    """The real crops with landmarks of a prepared folder as ``{"image", "part", "part_patches"}``:
    the normalised ``(3, S, S)`` crop, the index in :data:`PARTS` of the part to hide and its ``(N,)``
    bool patch grid (``patch``-pixel patches). Sample ``i`` of epoch ``e`` draws from the seed
    ``(seed, e, i)``; :meth:`set_epoch` reshuffles."""

    def __init__(self, root: str | Path, config: ModelConfig, patch: int, flip: float = 0.5, seed: int = 0):
        self.root = Path(root)
        table = read_prepared(self.root)
        landmarks = table[list(LANDMARK_COLUMNS)].to_numpy(np.float32).reshape(-1, 5, 2)
        keep = (table["label"].to_numpy() == 0) & np.isfinite(landmarks).all(axis=(1, 2))
        if not keep.any():
            raise PreparedDataError(f"{self.root}: no real crops with landmarks to pretrain on")
        self.crops, self.landmarks = table.loc[keep, "crop"].tolist(), landmarks[keep]
        self.config, self.patch, self.flip, self.seed = config, patch, flip, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = np.random.default_rng((self.seed, epoch)).permutation(len(self.crops))

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = int(self.order[index])
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image = read_crop(self.root / self.crops[position])
        part = int(rng.integers(len(PARTS)))
        size = self.config.input_size
        patches = part_patches(image.shape, self.landmarks[position], PARTS[part], size, self.patch)
        image = resize_and_pad(image, size)
        if rng.random() < self.flip:  # the part flips with the face
            image, patches = image[:, ::-1], patches.reshape(size // self.patch, -1)[:, ::-1]
        return {"image": to_batch([np.ascontiguousarray(image)], self.config)[0], "part": part,
                "part_patches": torch.from_numpy(np.ascontiguousarray(patches).ravel())}


def pretrain(model_config: ModelConfig, cfg: PretrainConfig, data: str | Path, out: str | Path,
             resume: bool = False) -> MaskedAutoencoder:
    """Pretrain on the real crops of ``data``, writing the run's files in ``out`` (see the module doc)."""
    out = Path(out)
    device = default_device()
    precision = Precision.resolve(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    model = MaskedAutoencoder(model_config, cfg.decoder_width, cfg.decoder_depth, cfg.decoder_heads)
    model.spec = default_spec(model_config, **read_crop_entry(data))  # its checkpoints store the crops it learns from
    dataset = RealFaces(data, model_config, model.patch, cfg.flip, cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.workers, drop_last=True,
                        pin_memory=device.type == "cuda")
    iterations = cfg.iterations or len(loader)
    if not iterations:
        raise PreparedDataError(f"{data}: {len(dataset)} real crops make no batch of {cfg.batch_size}")
    settings = {"model": model_config.to_dict(), "pretrain": dataclasses.asdict(cfg)}
    if not resume:
        check_fresh(out)
    state = resume_state(out, settings, ("workers",)) if resume else None
    if state:
        mismatch = weights_mismatch(model, state["state_dict"])
        if mismatch:
            raise CheckpointError(f"{out / 'last.pt'}: weights do not fit: {mismatch}")
        model.load_state_dict(state["state_dict"], strict=True)
    model = precision.model(model)  # before the optimizer's state is loaded: it follows its parameters' device
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * iterations)
    scaler = resumed_scaler(state, precision, out)
    history: list[dict[str, Any]] = []
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
    write_json(out / "config.json", {**settings, "data": str(Path(data).resolve()), "device": str(device),
                                     "precision": precision.name, "real_crops": len(dataset)})
    logger.info("%s: %d real crops, %d patches of %d px, %d steps per epoch on %s (%s)", model_config.encoder,
                len(dataset), model.patches, model.patch, iterations, device, precision.name)
    shown = next(iter(DataLoader(dataset, batch_size=8)))  # the same crops and masks in every grid
    shown_mask = fill_mask(shown["part_patches"], cfg.mask_ratio, torch.Generator().manual_seed(cfg.seed))
    for epoch in range(len(history), cfg.epochs):
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        losses, start = [], time.perf_counter()
        batches = epoch_batches(loader, epoch, iterations)
        for batch in tqdm(batches, total=iterations, desc=f"epoch {epoch}", leave=False):
            images = precision.images(batch["image"])
            mask = fill_mask(batch["part_patches"], cfg.mask_ratio, generator).to(device)
            with precision.autocast():
                loss = model.loss(images, model(images, mask), mask)
            optimizer_step(model, loss, optimizer, scaler)
            scheduler.step()
            losses.append(loss.item())
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "first_loss": losses[0], "last_loss": losses[-1],
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start})
        _save(out, model, optimizer, scheduler, scaler, precision, history, settings)
        _plot_loss(out / "loss.png", history)
        write_png(out / f"recon_epoch{epoch:03d}.png", reconstruction_grid(model, shown["image"], shown_mask))
        logger.info("epoch %d: loss %.4f (%.4f -> %.4f), %.0f s", epoch, history[-1]["loss"], losses[0], losses[-1],
                    history[-1]["seconds"])
    return model


def _save(out: Path, model: MaskedAutoencoder, optimizer, scheduler, scaler, precision: Precision,
          history: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """``last.pt`` (resumable, with the resolved precision), ``encoder.pth`` (the classifier-ready encoder)
    and ``metrics.csv``, atomically."""
    save_checkpoint(out / "last.pt", model, pretrain=settings["pretrain"], optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), precision=precision.name,
                    history=history)
    with atomic_write(out / "encoder.pth", "wb") as f:
        torch.save(model.encoder.state_dict(), f)
    write_history(out, history)


@torch.no_grad()
def reconstruction_grid(model: MaskedAutoencoder, images: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Rows of original / masked (hidden patches grey) / reconstructed (visible patches kept, masked
    ones predicted) crops, one column per image: an RGB uint8 array."""
    model.eval()
    device = next(model.parameters()).device
    images, mask = images.to(device), mask.to(device)
    predicted = unpatchify(model(images, mask).float(), model.patch, model.size)
    pixel_mask = unpatchify(mask[..., None].float().expand(-1, -1, model.patch ** 2 * 3), model.patch, model.size)
    rows = [images, images * (1 - pixel_mask), images * (1 - pixel_mask) + predicted * pixel_mask]
    mean = torch.tensor(model.config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std, device=device).view(1, 3, 1, 1)
    grid = torch.cat([torch.cat(list(row * std + mean), dim=2) for row in rows], dim=1)
    return (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _plot_loss(path: Path, history: list[dict[str, Any]]) -> None:
    table = pd.DataFrame(history)
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    axes.plot(table.epoch, table.loss, "o-", label="mean over the epoch")
    axes.plot(table.epoch, table.last_loss, "--", label="last step")
    axes.set(xlabel="epoch", ylabel="MSE on masked patches (normalised pixels)", title="MAE reconstruction loss")
    axes.grid(alpha=0.3)
    axes.legend()
    write_figure(path, figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.pretrain_mae",
                                     description="Masked-autoencoder pretraining of a ViT on real face crops, "
                                                 "one facial part hidden per crop (DeepfakeMAE stage 1).")
    parser.add_argument("--config", required=True, help="JSON config with 'model' and 'pretrain' sections "
                        "(see training/configs/mae/)")
    parser.add_argument("--data", required=True, help="folder written by python -m preprocessing.prepare")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        model_config, cfg = load_pretrain_config(args.config)
        with logging_redirect_tqdm():
            pretrain(model_config, cfg, args.data, args.out, resume=args.resume)
    except (ConfigError, CheckpointError, DeviceError, PreparedDataError) as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
