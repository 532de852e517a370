"""The training and validation loops: one epoch of optimisation, per-video validation metrics.

Batches are dicts as the datasets yield them: ``image`` (B, 3, S, S) float, normalised; ``target`` (B,)
float in [0, 1] (1 = fake; mixup and clipped targets lie in between, > 0.5 counts as fake); ``video``
(B,) video ids. Validation scores a video by the mean of its crops' probabilities, as the kernel does.
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from models.checkpoint import unwrap
from models.metrics import label_metrics
from models.precision import Precision

from . import distributed

def balanced_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The DFDC winner's loss: binary cross-entropy averaged over the batch's fakes (target > 0.5) and
    over its reals separately, then the mean of the two, so each class weighs half whatever the mix.
    Computed in fp32."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    fake = targets > 0.5
    return torch.stack([losses[part].mean() for part in (fake, ~fake) if part.any()]).mean()


def map_loss(map_logits: torch.Tensor, masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy of a map head's logits (B, 1, h, w) against the samples' masks
    (B, S, S) in [0, 1], averaged over h x w with the masks area-resized to it, then over the samples
    whose mask is ``known``; 0 when none is. Computed in fp32."""
    targets = F.interpolate(masks[:, None].float(), size=map_logits.shape[-2:], mode="area")
    losses = F.binary_cross_entropy_with_logits(map_logits.float(), targets, reduction="none").mean(dim=(1, 2, 3))
    weights = known.float()
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
    *,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float | None = None,
    ema: nn.Module | None = None,
    step: int = 0,
    total: int | None = None,
    desc: str = "train",
    map_weight: float = 1.0,
) -> dict[str, float]:
    """One pass of optimisation over ``batches``, stepping ``scheduler`` every iteration. The loss is
    :func:`balanced_bce`, plus ``map_weight`` times :func:`map_loss` for a model with a map head.

    ``step`` is the number of optimizer steps taken before (it drives the EMA's warm-up); ``total`` the
    number of batches, for the progress bar. Returns ``loss`` (mean over iterations and ranks), ``step``
    (after the epoch), ``images`` (seen by all ranks), ``fake_share`` (their share with target > 0.5),
    ``map_loss`` (mean, NaN without a map head), ``seconds`` and ``images_per_s``.
    """
    scaler = scaler or precision.scaler()
    model.train()
    with_map = getattr(unwrap(model), "decoder", None) is not None
    losses: list[float] = []
    map_losses: list[float] = []
    images_seen = fakes_seen = 0
    start = time.perf_counter()
    bar = tqdm(batches, total=total, desc=desc, disable=not distributed.is_primary(), leave=False)
    for batch in bar:
        images = precision.images(batch["image"])
        targets = batch["target"].to(precision.device, non_blocking=True)
        with precision.autocast():
            output = model(images, with_map=True) if with_map else model(images)
        if with_map:
            logits, maps = output
            pixels = map_loss(maps, batch["mask"].to(precision.device), batch["mask_known"].to(precision.device))
            loss = balanced_bce(logits, targets) + map_weight * pixels
            map_losses.append(pixels.item())
        else:
            loss = balanced_bce(output, targets)
        optimizer_step(model, loss, optimizer, scaler, clip_grad_norm)
        scheduler.step()
        step += 1
        if ema is not None:
            ema.update(unwrap(model), step=step)
        losses.append(loss.item())
        images_seen += len(images)
        fakes_seen += int((targets > 0.5).sum())
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
    seconds = time.perf_counter() - start
    fake_share = distributed.mean(fakes_seen / images_seen) if images_seen else math.nan
    images_seen *= distributed.world_size()
    return {
        "loss": distributed.mean(np.mean(losses)) if losses else math.nan,
        "step": step,
        "images": images_seen,
        "fake_share": fake_share,
        "map_loss": distributed.mean(np.mean(map_losses)) if map_losses else math.nan,
        "seconds": seconds,
        "images_per_s": images_seen / seconds if seconds > 0 else math.nan,
    }


def optimizer_step(model: nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, clip_grad_norm: float | None = None) -> None:
    """One optimizer step on ``loss``: gradients through ``scaler`` (fp16's loss scaling; a disabled
    scaler is a plain step), their norm clipped to ``clip_grad_norm`` when given."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad_norm:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable[dict[str, Any]], precision: Precision,
            desc: str = "val") -> pd.DataFrame:
    """Per-crop probabilities of being fake, gathered from all ranks: columns ``video``, ``target``, ``prob``.

    Pass the bare model (not its DDP wrapper): ranks may hold different numbers of batches.
    """
    model.eval()
    videos: list[str] = []
    targets: list[float] = []
    probs: list[float] = []
    for batch in tqdm(loader, desc=desc, disable=not distributed.is_primary(), leave=False):
        with precision.autocast():
            logits = model(precision.images(batch["image"]))
        probs.extend(torch.sigmoid(logits.float()).cpu().tolist())
        targets.extend(batch["target"].float().tolist())
        videos.extend(batch["video"])
    parts = distributed.gather((videos, targets, probs))
    return pd.DataFrame({
        "video": [v for part in parts for v in part[0]],
        "target": [t for part in parts for t in part[1]],
        "prob": [p for part in parts for p in part[2]],
    })


def video_metrics(videos: Sequence[str], targets: Sequence[float],
                  probs: Sequence[float]) -> tuple[dict[str, float], pd.DataFrame]:
    """Score videos by the mean probability of their crops and measure them: the
    :func:`label_metrics` of the videos, and the per-video table (``video``, ``label`` 0/1, ``prob``,
    ``crops``)."""
    crops = pd.DataFrame({"video": list(videos), "target": np.asarray(targets, float),
                          "prob": np.asarray(probs, float)})
    if crops.empty:
        raise ValueError("no validation crops to score")
    table = crops.groupby("video", sort=True).agg(target=("target", "mean"), prob=("prob", "mean"),
                                                  crops=("prob", "size")).reset_index()
    table.insert(1, "label", (table.pop("target") > 0.5).astype(int))
    return label_metrics(table.label, table.prob), table
