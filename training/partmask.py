"""Facial-part masks for masked-autoencoder pretraining (DeepfakeMAE): hide one part of a face, and
random patches up to a target ratio, so the model learns to infer a part from the rest of the face.

Conventions as in :mod:`training.dropout`: ``H x W`` bool regions, True on the part; ``landmarks``
``(5, 2)`` float ``(x, y)`` crop pixels in MTCNN order. A *patch grid* flattens the ``(H / p) x
(W / p)`` patches of side ``p`` row by row, as a ViT's patch embedding orders its tokens.
"""
from __future__ import annotations

import numpy as np
import torch

from preprocessing.geometry import resize_and_pad

from .dropout import (FACE_CENTRE, LEFT_EYE, LEFT_MOUTH, RIGHT_EYE, RIGHT_MOUTH, eye_band, face_axes, face_frame,
                      mouth_band, nose_line)

#: The paper's three regions, in the order a sample's part index uses.
PARTS = ("eyes", "nose_cheeks", "lips")


def nose_cheeks(shape: tuple[int, ...], landmarks) -> np.ndarray:
    """The nose and the cheeks: the face ellipse (:func:`training.dropout.face_frame`) between the
    eye line and the mouth line, less the eye and mouth bands, with the nose line."""
    lm = np.asarray(landmarks, dtype=np.float64)
    _, v, inside = face_frame(shape, lm)
    eye_to_mouth = (lm[LEFT_MOUTH] + lm[RIGHT_MOUTH] - lm[LEFT_EYE] - lm[RIGHT_EYE]) / 2 @ face_axes(lm)[2]
    between = inside & (v > -FACE_CENTRE * eye_to_mouth) & (v < (1 - FACE_CENTRE) * eye_to_mouth)
    return (between & ~eye_band(shape, lm) & ~mouth_band(shape, lm)) | nose_line(shape, lm)


PART_REGIONS = {"eyes": eye_band, "nose_cheeks": nose_cheeks, "lips": mouth_band}


def patch_grid(region: np.ndarray, patch: int) -> np.ndarray:
    """The patches ``region`` touches: a flat bool array over the patch grid of an image whose sides
    are multiples of ``patch``."""
    height, width = region.shape
    if height % patch or width % patch:
        raise ValueError(f"image {height}x{width} is not a whole number of {patch}-pixel patches")
    return region.reshape(height // patch, patch, width // patch, patch).any(axis=(1, 3)).ravel()


def part_patches(shape: tuple[int, ...], landmarks, part: str, size: int, patch: int) -> np.ndarray:
    """The patch grid of ``part`` (one of :data:`PARTS`) of a crop of ``shape`` once resized to
    ``size x size`` by :func:`preprocessing.geometry.resize_and_pad`, as the model sees it."""
    region = PART_REGIONS[part](shape, landmarks).astype(np.uint8) * 255
    return patch_grid(resize_and_pad(region, size) > 0, patch)


def fill_mask(parts: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The masks of a batch: each row's ``parts`` patches (``(B, N)`` bool) plus random others, until
    every row masks the same number, ``round(ratio * N)`` or the largest part if that is more (a ViT
    batch needs as many visible patches in every sample). Returns ``(B, N)`` bool, True = masked."""
    batch, count = parts.shape
    masked = max(round(ratio * count), int(parts.sum(1).max()) if batch else 0)
    if masked >= count:
        raise ValueError(f"masking {masked} of {count} patches leaves the encoder nothing to see")
    scores = torch.rand(batch, count, generator=generator).to(parts.device)
    scores[parts] = -1.0  # a part's patches come first
    order = scores.argsort(dim=1)
    mask = torch.zeros_like(parts)
    mask.scatter_(1, order[:, :masked], True)
    return mask
