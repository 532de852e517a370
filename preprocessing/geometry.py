"""Box and crop arithmetic, as pure functions.

Conventions: images are ``H x W x C`` uint8 arrays (RGB unless a caller says otherwise); boxes are
``(x1, y1, x2, y2)`` in pixels of the full-resolution frame, ``x2``/``y2`` exclusive.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

DEFAULT_MARGIN = 0.3


def grow_boxes(boxes, margin: float) -> np.ndarray:
    """Grow each box by ``margin`` times its width on the left and on the right, and likewise its
    height at the top and the bottom; float, unclipped, shaped ``(n, 4)``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    delta = margin * np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    return boxes + delta * [-1, -1, 1, 1]


def expand_box(box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow ``box`` by ``margin`` (see :func:`grow_boxes`), snap outward to whole pixels and clip
    to a ``width x height`` frame, so it never leaves the frame (a box wholly outside clips to an
    empty box)."""
    x1, y1, x2, y2 = grow_boxes(box, margin)[0]
    return (
        min(max(math.floor(x1), 0), width),
        min(max(math.floor(y1), 0), height),
        max(min(math.ceil(x2), width), 0),
        max(min(math.ceil(y2), height), 0),
    )


def crop_faces(frame: np.ndarray, boxes, margin: float = DEFAULT_MARGIN) -> list[np.ndarray]:
    """Cut one crop per box out of ``frame``, each grown by ``margin`` (see :func:`expand_box`)."""
    height, width = frame.shape[:2]
    crops = []
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = expand_box(box, margin, width, height)
        crops.append(frame[y1:y2, x1:x2].copy())
    return crops


def box_iou(a, b) -> np.ndarray:
    """Pairwise IoU of two sets of xyxy boxes, shaped ``(len(a), len(b))``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def resize_and_pad(
    image: np.ndarray,
    size: int,
    interpolation_down: int = cv2.INTER_AREA,
    interpolation_up: int = cv2.INTER_CUBIC,
) -> np.ndarray:
    """Scale ``image`` so its long side is ``size`` (aspect kept), then zero-pad it to ``size x size``.

    The image is centred in the square. This is the one resize that training, validation and the
    kernel share, so a model sees the same geometry everywhere.
    """
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"cannot resize an empty image of shape {image.shape}")
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = interpolation_down if scale < 1 else interpolation_up
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out = np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    out[top : top + new_h, left : left + new_w] = resized
    return out
