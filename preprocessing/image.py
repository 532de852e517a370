"""Still images as one-frame inputs, beside :mod:`preprocessing.video`.

An image comes out as the same :class:`~preprocessing.video.Frames` a one-frame video gives: one
upright RGB ``uint8`` frame (EXIF orientation applied) at index 0, shrunk to ``max_side`` like a
video frame. Pillow decodes it because it reports a truncated file as an error, where OpenCV fills
the missing part with grey and carries on.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .video import FRAMES, MAX_SIDE, VIDEO_EXTENSIONS, Frames, VideoReadError, find_videos, read_frames, shrink

#: File name endings treated as still images when a folder is scanned (case-insensitive).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
#: Every ending an input folder is searched for: videos and still images.
INPUT_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | os.PathLike, max_side: int | None = MAX_SIDE) -> Frames:
    """The image at ``path`` as one frame; raises :class:`VideoReadError` naming the file and the cause
    for a missing, empty, truncated or undecodable file."""
    path = str(path)
    if not os.path.isfile(path):
        raise VideoReadError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise VideoReadError(path, f"not a readable image ({err})") from err
    shrunk = shrink(rgb, max_side)
    return Frames(path, np.zeros(1, dtype=np.int64), [shrunk], 1, 0.0, max(shrunk.shape[:2]) / max(rgb.shape[:2]))


def read_input(path: str | os.PathLike, n: int = FRAMES, max_side: int | None = MAX_SIDE, floor: bool = False,
               runs: int = 0) -> Frames:
    """:func:`read_image` for a still image (by its ending: no runs), else :func:`read_frames`
    (``floor``: its spacing rule; ``runs``: its runs of consecutive frames)."""
    return read_image(path, max_side) if is_image(path) else read_frames(path, n, max_side, floor=floor, runs=runs)


def find_inputs(root: str | os.PathLike) -> list[Path]:
    """Videos and still images under ``root`` (recursively), sorted."""
    return sorted(find_videos(root) + [p for p in Path(root).rglob("*") if is_image(p) and p.is_file()])
