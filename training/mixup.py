"""Mixup: blend a fake with its pixel-aligned real (same original, same frame), or any two samples.

A blend with weight ``t`` is ``(1 - t) * a + t * b`` and its target ``(1 - t) * y_a + t * y_b``; for a
real / fake pair that is an image ``(1 - t) * real + t * fake`` with target ``t``. ``t`` is drawn
from Beta(alpha, alpha) (alpha 0.5: mostly near 0 or 1).
"""
from __future__ import annotations

import numpy as np
import torch

ALPHA = 0.5


def sample_weight(rng: np.random.Generator, alpha: float = ALPHA) -> float:
    """One blend weight ``t`` ~ Beta(alpha, alpha)."""
    return float(rng.beta(alpha, alpha))


def blend_pair(real: np.ndarray, fake: np.ndarray, t: float) -> np.ndarray:
    """``(1 - t) * real + t * fake`` of two same-shaped uint8 crops, rounded to uint8; its target is ``t``."""
    if real.shape != fake.shape:
        raise ValueError(f"mixup needs pixel-aligned crops: real {real.shape} vs fake {fake.shape}")
    mixed = (1.0 - t) * real.astype(np.float32) + t * fake.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def mixup_batch(images: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator,
                alpha: float = ALPHA) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordinary mixup for unpaired data: blend each sample of a (B, ...) batch with a random other
    one of the batch, a weight per sample; returns the blended images and targets."""
    count = images.shape[0]
    t = torch.from_numpy(rng.beta(alpha, alpha, size=count)).to(images.device, images.dtype)
    partner = torch.from_numpy(rng.permutation(count)).to(images.device)
    weight = t.view(-1, *([1] * (images.dim() - 1)))
    mixed = (1 - weight) * images + weight * images[partner]
    return mixed, (1 - t.to(targets.dtype)) * targets + t.to(targets.dtype) * targets[partner]
