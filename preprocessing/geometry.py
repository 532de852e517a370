"""Box and crop arithmetic, as pure functions.

Conventions: images are ``H x W x C`` uint8 arrays (RGB unless a caller says otherwise); boxes are
``(x1, y1, x2, y2)`` in pixels of the full-resolution frame, ``x2``/``y2`` exclusive.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

DEFAULT_MARGIN = 0.3
#: :func:`resize`'s name for PIL's bilinear filter (antialiased when shrinking, unlike OpenCV's).
PIL_BILINEAR = "pil-bilinear"


def grow_boxes(boxes, margin: float | tuple[float, float]) -> np.ndarray:
    """Grow each box by ``margin`` times its width on the left and on the right, and likewise its
    height at the top and the bottom (``margin`` one fraction, or (x, y) fractions); float,
    unclipped, shaped ``(n, 4)``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    per_axis = np.broadcast_to(np.asarray(margin, dtype=np.float64), (2,))
    delta = np.concatenate([(boxes[:, 2:] - boxes[:, :2]) * per_axis] * 2, axis=1)
    return boxes + delta * [-1, -1, 1, 1]


def expand_box(box, margin: float | tuple[float, float], width: int, height: int) -> tuple[int, int, int, int]:
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


def truncated_box(box, margin: tuple[float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The DFDC winner's crop box: corners truncated to whole pixels (toward zero), then grown by
    ``floor(margin * side)`` whole pixels per side (``margin`` = (x, y) fractions of the integer box
    width and height: 1/3 gives ``w // 3``), clipped to the ``width x height`` frame."""
    x1, y1, x2, y2 = (math.trunc(float(v)) for v in np.asarray(box, dtype=np.float64).reshape(4))
    pad_x = math.floor((x2 - x1) * margin[0] + 1e-9)  # 1e-9: (3k) * (1/3 as a float) is k, not k - 1
    pad_y = math.floor((y2 - y1) * margin[1] + 1e-9)
    return (min(max(x1 - pad_x, 0), width), min(max(y1 - pad_y, 0), height),
            max(min(x2 + pad_x, width), 0), max(min(y2 + pad_y, height), 0))


def square_box(box, margin: float, side: int, width: int, height: int, window: int = 512) -> tuple[int, int, int, int]:
    """Polimi's face box (icpr2020dfdc), every step in their arithmetic: the float32 detector ``box``
    grown by ``round(margin * box height)`` (half to even) on each side and twice that at the top
    (BlazeFace misses the forehead), clipped to the frame; the ``window``-pixel square their
    extraction stored, centred on it, the grown box's corners truncated into it; then the square of
    side ``int(side / min(side / h, side / w))`` (the longer side, give or take their float
    rounding; ``side`` the model's input) centred on that box and clipped to the window."""
    f32 = np.float32
    x1, y1, x2, y2 = np.asarray(box, dtype=f32).reshape(4)
    offset = np.round(f32(margin) * (y2 - y1))
    left, top = max(x1 - offset, f32(0)), max(y1 - 2 * offset, f32(0))
    right, bottom = min(x2 + offset, f32(width)), min(y2 + offset, f32(height))
    wx, wy = max((left + right) // 2 - window // 2, f32(0)), max((top + bottom) // 2 - window // 2, f32(0))
    window_w, window_h = int(min(wx + window, width) - wx), int(min(wy + window, height) - wy)
    left, top, right, bottom = (int(v) for v in (left - wx, top - wy, right - wx, bottom - wy))  # int16 in theirs
    w, h = right - left, bottom - top
    square = int(side / min(side / h, side / w)) if w > 0 and h > 0 else side
    new_top = max((top + bottom) // 2 - square // 2, 0)
    new_left = max((left + right) // 2 - square // 2, 0)
    return (int(wx) + new_left, int(wy) + new_top,
            int(wx) + min(new_left + square, window_w), int(wy) + min(new_top + square, window_h))


def resize(image: np.ndarray, size: tuple[int, int], interpolation: int | str) -> np.ndarray:
    """``image`` resized to ``size`` = (width, height) by an OpenCV ``interpolation`` flag, or by
    PIL's filter for :data:`PIL_BILINEAR`."""
    if interpolation == PIL_BILINEAR:
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return cv2.resize(image, size, interpolation=interpolation)


def fitted_size(height: int, width: int, size: tuple[int, int], truncate: bool = False) -> tuple[int, int]:
    """``(new_w, new_h)`` of an image scaled, aspect kept, to fit ``size`` = (width, height) with one
    side touching: that side gets the target exactly, the other ``side * scale`` rounded (or
    truncated, the DFDC winner's ``int``), at least 1 pixel."""
    snap = int if truncate else round
    if size[0] / width < size[1] / height:  # a tie (a square into a square) goes to the height, as the winner's did
        return size[0], max(1, snap(height * (size[0] / width)))
    return max(1, snap(width * (size[1] / height))), size[1]


def resize_and_pad(
    image: np.ndarray,
    size: int | tuple[int, int],
    interpolation_down: int | str = cv2.INTER_AREA,
    interpolation_up: int | str = cv2.INTER_CUBIC,
    truncate: bool = False,
) -> np.ndarray:
    """Scale ``image`` to fit ``size`` (an int for a square, or (width, height)) with its aspect kept
    (see :func:`fitted_size`), then zero-pad it to ``size``, centred.

    This is the one resize that training, validation and the kernel share, so a model sees the same
    geometry everywhere.
    """
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"cannot resize an empty image of shape {image.shape}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    new_w, new_h = fitted_size(height, width, size, truncate)
    interpolation = interpolation_down if new_w < width or new_h < height else interpolation_up
    resized = resize(image, (new_w, new_h), interpolation)
    top, left = (size[1] - new_h) // 2, (size[0] - new_w) // 2
    out = np.zeros((size[1], size[0]) + image.shape[2:], dtype=image.dtype)
    out[top : top + new_h, left : left + new_w] = resized
    return out
