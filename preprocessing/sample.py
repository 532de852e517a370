"""The embedded sample: short clips rendered from scikit-image's public-domain astronaut portrait.

They let every command run on a fresh machine with no dataset: one clip of one slowly moving face,
one of two faces side by side (two tracks).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from .image import INPUT_EXTENSIONS, find_inputs

log = logging.getLogger(__name__)

#: Where Kaggle mounts the competition's test videos: the default input when it exists.
KAGGLE_TEST_VIDEOS = Path("/kaggle/input/deepfake-detection-challenge/test_videos")

FRAME_SIZE = (640, 360)  # width, height
FRAMES = 48
FPS = 24.0


def _portrait(height: int) -> np.ndarray:
    """The astronaut (BGR), cut to head and shoulders and scaled to ``height``."""
    face = cv2.cvtColor(data.astronaut()[0:330, 90:370], cv2.COLOR_RGB2BGR)
    return cv2.resize(face, (round(face.shape[1] * height / face.shape[0]), height), interpolation=cv2.INTER_AREA)


def _write(path: Path, frames: list[np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), FPS, FRAME_SIZE)
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write mp4v video here")
    for frame in frames:
        writer.write(frame)
    writer.release()
    os.replace(tmp, path)


def _scene(portraits: list[np.ndarray], t: int) -> np.ndarray:
    width, height = FRAME_SIZE
    canvas = np.full((height, width, 3), 40, np.uint8)
    slot = width // len(portraits)
    for i, p in enumerate(portraits):
        dx = round(12 * np.sin(2 * np.pi * t / FRAMES + i))  # a gentle sway left and right
        x = i * slot + (slot - p.shape[1]) // 2 + dx
        y = (height - p.shape[0]) // 2
        canvas[y : y + p.shape[0], x : x + p.shape[1]] = p
    return canvas


def render_sample(folder: str | os.PathLike) -> list[Path]:
    """Write the sample clips into ``folder`` (once; existing clips are kept) and return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips = {"astronaut.mp4": [_portrait(300)], "astronaut_pair.mp4": [_portrait(220), _portrait(220)[:, ::-1]]}
    paths = []
    for name, portraits in clips.items():
        path = folder / name
        if not path.exists():
            _write(path, [_scene(portraits, t) for t in range(FRAMES)])
        paths.append(path)
    return paths


def resolve_videos(given: list[Path] | None, sample_dir: Path) -> tuple[list[Path], Path | None]:
    """The videos a command should process, and the folder their names are relative to.

    One folder: its videos and still images, searched recursively (see :func:`find_inputs`). Files:
    themselves (names relative to nothing). Nothing: Kaggle's test folder when present, else the embedded sample,
    rendered into ``sample_dir``.

    A path that does not exist, or a folder without a video, is a :class:`ValueError` naming it: a
    typo on the command line must not become a "successful" run. A bad *file* is the caller's to
    report (the kernel gives it the prior).
    """
    if not given:
        if KAGGLE_TEST_VIDEOS.is_dir():
            return _videos_in(KAGGLE_TEST_VIDEOS), KAGGLE_TEST_VIDEOS
        log.info("no videos given: using the embedded astronaut sample in %s", sample_dir)
        return render_sample(sample_dir), None
    missing = [p for p in given if not p.exists()]
    if missing:
        raise ValueError(f"{missing[0]}: no such file or folder")
    if len(given) == 1 and given[0].is_dir():
        return _videos_in(given[0]), given[0]
    folders = [p for p in given if p.is_dir()]
    if folders:
        raise ValueError(f"give one folder or a list of files, not the folder {folders[0]} among them")
    return list(given), None


def _videos_in(folder: Path) -> list[Path]:
    videos = find_inputs(folder)
    if not videos:
        raise ValueError(f"{folder}: no video in this folder (endings {' '.join(sorted(INPUT_EXTENSIONS))})")
    return videos
