"""Prepare one video of a dataset: its settings (:class:`PrepareConfig`), and the work
(:func:`prepare_video`) that both engines run, the local processes of ``python -m preprocessing.prepare``
and its Ray tasks (:mod:`preprocessing.ray_prepare`).

An original (or a fake without one) is cropped with its own MTCNN detections; a fake whose original
is prepared and frame-aligned with it is cropped with the original's boxes, with a mask of where the
two crops differ. Boxes are xyxy in frame pixels; crops are RGB.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from plumbing.cluster import ENGINES
from plumbing.device import default_device
from plumbing.fileio import write_json, write_png

from .detect import DEFAULTS as DETECTOR, TRAINING_THRESHOLDS, FaceDetector
from .faces import find_faces
from .geometry import DEFAULT_MARGIN
from .index import DATASETS
from .masks import DEFAULT_BLUR, DEFAULT_METHOD, DEFAULT_THRESHOLDS, MASK_METHODS, difference_mask
from .prepared import DONE, FAILED, video_dir
from .video import FRAMES, Frames, VideoReadError, read_frames

log = logging.getLogger("prepare")  # the command's name in its log lines


class PrepareError(ValueError):
    """The run cannot start as asked (an --out made with other settings, a bad --shard)."""


@dataclass
class PrepareConfig:
    """Everything a run depends on; written, resolved, to ``<out>/config.json``.

    ``frames``: evenly spaced frames per video; ``margin``: crop margin per side as a fraction of
    the box; ``thresholds``/``min_score``/``min_size``/``region_grow``/``region_size``/
    ``refine_steps``: the detector's (``min_size`` a fraction of the frame's short side); ``mask``:
    ``pixel`` or ``ssim``, with ``mask_blur`` (Gaussian sigma, pixels) and ``mask_threshold``
    (dissimilarity in [0, 1]; None: the method's default);
    ``workers``: processes (0: run in this process; with ``engine`` ``ray``, the CPUs of embedded
    Ray); ``engine``: ``local`` or ``ray`` (embedded, or on the cluster at ``address``); ``shard``:
    ``"K/N"``, this run's share of the groups.
    """

    dataset: str
    root: str
    out: str
    labels: str | None = None
    frames: int = FRAMES
    margin: float = DEFAULT_MARGIN
    thresholds: tuple[float, float, float] = TRAINING_THRESHOLDS
    min_score: float = DETECTOR["min_score"]
    min_size: float = DETECTOR["min_size"]
    mask: str = DEFAULT_METHOD
    mask_blur: float = DEFAULT_BLUR
    mask_threshold: float | None = None
    folds: int = 5
    seed: int = 0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = DETECTOR["batch_size"]
    region_grow: float = DETECTOR["region_grow"]
    region_size: int = DETECTOR["region_size"]
    refine_steps: int = DETECTOR["refine_steps"]
    device: str | None = None
    shard: str = "0/1"
    overwrite: bool = False
    engine: str = "local"
    address: str | None = None

    def resolved(self) -> PrepareConfig:
        """A copy with absolute paths, the mask threshold and the device filled in."""
        if self.dataset not in DATASETS:
            raise PrepareError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.mask not in MASK_METHODS:
            raise PrepareError(f"unknown mask {self.mask!r}; choose one of {', '.join(MASK_METHODS)}")
        shard_range(self.shard)
        if self.engine not in ENGINES:
            raise PrepareError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.frames < 1 or self.folds < 1 or self.workers < 0:
            raise PrepareError(f"need frames >= 1, folds >= 1 and workers >= 0; got {self.frames}, {self.folds}, "
                               f"{self.workers}")
        values = asdict(self)
        values.update(
            root=str(Path(self.root).resolve()),
            out=str(Path(self.out).resolve()),
            labels=str(Path(self.labels).resolve()) if self.labels else None,
            thresholds=tuple(float(t) for t in self.thresholds),
            mask_threshold=DEFAULT_THRESHOLDS[self.mask] if self.mask_threshold is None else self.mask_threshold,
            device=str(self.device or default_device()),
        )
        return PrepareConfig(**values)


class Task(NamedTuple):
    """One video to prepare; ``original`` is the id of its original when that is in this run, else ''."""

    video: str
    path: str
    original: str


def shard_range(shard: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``."""
    try:
        k, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise PrepareError(f"--shard must look like K/N (e.g. 0/4), got {shard!r}") from None
    if not 0 <= k < n:
        raise PrepareError(f"--shard {shard}: K must be in 0..N-1")
    return k, n


_detectors: dict[tuple, FaceDetector] = {}
_device: str | None = None  # a worker process's share of the devices (None: the config's)


def use_device(device: str) -> None:
    """Detect on ``device`` in this process, whatever the config says (a worker's place in
    ``prepare``'s plan)."""
    global _device
    _device = device


def _detector(config: PrepareConfig) -> FaceDetector:
    """One detector per process and setting, made on first use (aligned fakes never need one), on this
    process's device (:func:`use_device`), else the config's."""
    settings = {name: getattr(config, name) for name in DETECTOR if hasattr(config, name)}
    settings["device"] = _device or config.device
    key = tuple(settings.items())
    if key not in _detectors:
        _detectors[key] = FaceDetector(**settings)
    return _detectors[key]


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{path}: crop missing or unreadable; rerun with --overwrite")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _reference(out: Path, original: str, frames: Frames) -> tuple[dict | None, str]:
    """The original's record if ``frames`` (the fake's) are aligned with it, else None and why."""
    if not original:
        return None, "no original present"
    folder = video_dir(out, original)
    if not (folder / DONE).is_file():
        return None, "original unreadable" if (folder / FAILED).is_file() else "original not prepared"
    record = json.loads((folder / DONE).read_text())
    height, width = frames.images[0].shape[:2]
    if record["frame_count"] != frames.frame_count:
        return None, f"{frames.frame_count} frames, original has {record['frame_count']}"
    if (record["width"], record["height"]) != (width, height):
        return None, f"frames are {width}x{height}, original's {record['width']}x{record['height']}"
    return record, ""


def _crop_with_original(out: Path, task: Task, frames: Frames, reference: dict, config: PrepareConfig) -> list[dict]:
    """Crop ``frames`` with the original's boxes on the frames both have; masks against its crops."""
    images = dict(zip(frames.indices.tolist(), frames.images))
    faces = []
    for face in reference["faces"]:
        if face["frame"] not in images:
            continue
        x1, y1, x2, y2 = face["crop_box"]
        crop = images[face["frame"]][y1:y2, x1:x2]
        name = f"crops/{task.video}/{face['frame']:05d}_{face['track']}"
        mask = difference_mask(_read_rgb(out / face["crop"]), crop, config.mask, config.mask_blur,
                               config.mask_threshold)
        write_png(out / f"{name}.png", crop)
        write_png(out / f"{name}_mask.png", mask)
        faces.append({**face, "crop": f"{name}.png", "mask": f"{name}_mask.png", "real_crop": face["crop"]})
    return faces


def _crop_with_own_boxes(out: Path, task: Task, frames: Frames, config: PrepareConfig) -> list[dict]:
    faces = []
    for face in find_faces(frames, _detector(config), config.margin):
        name = f"crops/{task.video}/{face.frame:05d}_{face.track}.png"
        write_png(out / name, face.crop)
        faces.append({**face.to_record(), "crop": name, "mask": "", "real_crop": ""})
    return faces


def prepare_video(config: PrepareConfig, task: Task) -> dict:
    """Prepare one video into ``<out>/crops/<video>/``; returns its record (``faces.json``'s content).

    The folder is emptied first (a half-written earlier attempt), crops are written atomically,
    and ``faces.json`` last. An unreadable video writes ``failed.json`` instead.
    """
    out = Path(config.out)
    folder = video_dir(out, task.video)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.is_file():
            stale.unlink()
    start = time.perf_counter()
    try:
        frames = read_frames(task.path, config.frames)
    except VideoReadError as err:
        log.warning("skipped %s", err)
        record = {"video": task.video, "status": f"failed: {err.cause}",
                  "seconds": round(time.perf_counter() - start, 3)}
        write_json(folder / FAILED, record)
        return record
    reference, reason = _reference(out, task.original, frames)
    if reference is not None:
        faces = _crop_with_original(out, task, frames, reference, config)
    else:
        faces = _crop_with_own_boxes(out, task, frames, config)
        if task.original:
            log.debug("%s: cropped with its own boxes (%s)", task.video, reason)
    height, width = frames.images[0].shape[:2]
    record = {
        "video": task.video, "status": "ok", "frame_count": frames.frame_count, "fps": frames.fps,
        "width": width, "height": height, "frames": frames.indices.tolist(), "margin": config.margin,
        "original": task.original, "boxes_from": "original" if reference is not None else "self",
        "self_boxed_because": reason if task.original and reference is None else "",
        "seconds": round(time.perf_counter() - start, 3), "faces": faces,
    }
    write_json(folder / DONE, record)
    return record
