"""Difference masks: where a fake crop differs from its pixel-aligned real crop, as pure functions.

Crops are ``H x W x 3`` uint8 arrays of one size (RGB; the channel order does not matter). A
dissimilarity map is float32 in ``[0, 1]``; a mask is uint8, 255 where the fake differs, else 0.

Both crops are blurred first (Gaussian, ``blur`` = sigma in pixels) so the two videos' different
compression noise does not count as a difference. Two measures:

- ``pixel`` (the default): the largest absolute difference over the three channels, / 255;
- ``ssim``: 1 - SSIM (scikit-image ``structural_similarity``, 7 px window, mean over channels).

On the shared FF++ pairs (32 frames), with each threshold set so that 0.5% of the crops' background
is flagged, the pixel measure puts as much of its mass inside the face box as SSIM (Deepfakes 0.98
vs 0.97, FaceSwap 0.98 vs 0.96, mean over videos) and covers 1.5-2x more of the face (37% of the box
vs 24% and 18%): SSIM normalises contrast away and misses smooth changes of skin tone. Measured by
``python -m tests.benchmarks.bench_prepare --masks``.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import structural_similarity

MASK_METHODS = ("pixel", "ssim")
DEFAULT_METHOD = "pixel"
#: Gaussian sigma in pixels applied to both crops before comparing them.
DEFAULT_BLUR = 2.0
#: Dissimilarity at or above which a pixel counts as changed: about a 0.5% false-positive rate on
#: the background of the shared c40 (heavily compressed) pairs; 16/255 is 16 grey levels.
DEFAULT_THRESHOLDS = {"pixel": 16 / 255, "ssim": 0.25}


def _check_pair(real: np.ndarray, fake: np.ndarray) -> None:
    if real.shape != fake.shape or real.ndim != 3:
        raise ValueError(f"crops must be H x W x 3 arrays of one size; got real {real.shape}, fake {fake.shape}")


def dissimilarity(real: np.ndarray, fake: np.ndarray, method: str = DEFAULT_METHOD,
                  blur: float = DEFAULT_BLUR) -> np.ndarray:
    """Per-pixel dissimilarity of two aligned crops, float32 ``H x W`` in ``[0, 1]``."""
    _check_pair(real, fake)
    if method not in MASK_METHODS:
        raise ValueError(f"unknown mask method {method!r}; choose one of {', '.join(MASK_METHODS)}")
    if blur > 0:
        real, fake = (cv2.GaussianBlur(x, (0, 0), blur) for x in (real, fake))
    if method == "pixel":
        return (np.abs(real.astype(np.int16) - fake.astype(np.int16)).max(axis=2) / 255).astype(np.float32)
    window = max(3, min(7, (min(real.shape[:2]) - 1) // 2 * 2 + 1))  # odd, no larger than the crop
    _, similarity = structural_similarity(real, fake, win_size=window, channel_axis=2, full=True, data_range=255)
    return np.clip(1 - similarity.mean(axis=2), 0, 1).astype(np.float32)


def difference_mask(real: np.ndarray, fake: np.ndarray, method: str = DEFAULT_METHOD,
                    blur: float = DEFAULT_BLUR, threshold: float | None = None) -> np.ndarray:
    """uint8 mask, 255 where ``fake`` differs from ``real`` (dissimilarity >= ``threshold``).

    ``threshold`` defaults to the method's entry in :data:`DEFAULT_THRESHOLDS`.
    """
    d = dissimilarity(real, fake, method, blur)
    threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    return np.where(d >= threshold, 255, 0).astype(np.uint8)


def share_inside(mask: np.ndarray, box) -> float:
    """Fraction of ``mask``'s mass (sum of its values) inside ``box`` (xyxy, mask pixels, x2/y2
    exclusive, rounded to whole pixels and clipped); NaN for an empty mask."""
    total = float(mask.sum(dtype=np.float64))
    if total == 0:
        return float("nan")
    height, width = mask.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, x2 = np.clip([x1, x2], 0, width)
    y1, y2 = np.clip([y1, y2], 0, height)
    return float(mask[y1:y2, x1:x2].sum(dtype=np.float64)) / total
