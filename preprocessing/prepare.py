"""Turn a dataset into training data: aligned face crops, difference masks and leak-free folds.

    python -m preprocessing.prepare --dataset dfdc|ffpp|folder --root DIR --out DIR [--workers N]

Faces are detected on the ORIGINAL videos only (MTCNN with the stricter training thresholds), on
evenly spaced frames; every fake is cropped with its original's boxes on the same frame indices,
so a fake crop and its real crop are pixel-aligned, and a mask of where they differ is saved beside
it. A fake whose original is absent, unreadable or not frame-aligned with it (another frame count
or frame size) is cropped with its own detections (``boxes_from = self``) and gets no mask.

Writes into ``--out`` (the contract the training dataset reads):

- ``videos.csv``: one row per video: video, path, label, original, dataset, method, group, fold,
  frame_count, width, height, status (``ok`` or ``failed: <cause>``), boxes_from;
- ``crops.csv``: one row per crop: video, crop, mask, real_crop, frame, track, label, group, fold
  and the five landmarks in crop pixels, ``lm0_x, lm0_y, ..., lm4_x, lm4_y``;
- ``crops/<video id>/<frame:05d>_<track>.png`` (RGB, lossless) and ``..._mask.png`` (255 = differs);
- ``config.json`` (the resolved settings) and ``summary.json`` (counts and failures).

Resumable: a video's ``faces.json`` is written last and every file atomically, so a killed run
continues without redoing finished videos; a half-finished one is cleared and redone. Videos that
cannot be read are reported on one line each, recorded (``failed.json``), and retried next run.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import os
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .cli import add_field_flag, exit_on_sigterm
from .cluster import ENGINES, add_engine_arguments
from .cropspec import crop_entry
from .detect import DEFAULTS as DETECTOR, TRAINING_THRESHOLDS, FaceDetector, add_detector_arguments, default_device
from .faces import find_faces
from .fileio import atomic_write, write_json, write_png
from .folds import assign_folds
from .geometry import DEFAULT_MARGIN
from .index import DATASETS, build_index
from .logs import configure_logging
from .masks import DEFAULT_BLUR, DEFAULT_METHOD, DEFAULT_THRESHOLDS, MASK_METHODS, difference_mask
from .prepared import CROP_COLUMNS, VIDEO_COLUMNS
from .video import FRAMES, Frames, VideoReadError, read_frames

log = logging.getLogger("prepare")

#: Settings that change what is written for a video: a run resuming into an --out made with other
#: values would mix two kinds of crops, so it stops (unless --overwrite).
OUTPUT_SETTINGS = ("dataset", "root", "labels", "frames", "margin", "thresholds", "min_score", "min_size",
                   "region_grow", "region_size", "mask", "mask_blur", "mask_threshold")
DONE, FAILED = "faces.json", "failed.json"


class PrepareError(ValueError):
    """The run cannot start as asked (an --out made with other settings, a bad --shard)."""


@dataclass
class PrepareConfig:
    """Everything a run depends on; written, resolved, to ``<out>/config.json``.

    ``frames``: evenly spaced frames per video; ``margin``: crop margin per side as a fraction of
    the box; ``thresholds``/``min_score``/``min_size``/``region_grow``/``region_size``: the detector's
    (``min_size`` a fraction of the frame's short side); ``mask``: ``pixel`` or ``ssim``, with ``mask_blur`` (Gaussian sigma,
    pixels) and ``mask_threshold`` (dissimilarity in [0, 1]; None: the method's default);
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


@dataclass
class Summary:
    videos: int = 0
    prepared: int = 0
    resumed: int = 0
    crops: int = 0
    masks: int = 0
    self_boxed_fakes: int = 0
    no_face: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)

    def line(self) -> str:
        per_video = self.seconds / self.prepared if self.prepared else 0.0
        return (f"{self.videos} videos: {self.prepared} prepared ({per_video:.2f} s each), {self.resumed} already "
                f"done, {len(self.failures)} failed; {self.crops} crops, {self.masks} with a mask; "
                f"{self.self_boxed_fakes} fakes cropped with their own boxes; {self.no_face} videos without "
                f"a face; {len(self.absent)} listed videos absent")


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


def in_shard(groups: pd.Series, shard: str) -> pd.Series:
    """Whether each group belongs to ``shard`` (a stable hash of the group name, so every machine agrees)."""
    k, n = shard_range(shard)
    return groups.map(lambda g: zlib.crc32(g.encode()) % n == k)


def video_dir(out: Path, video: str) -> Path:
    return out / "crops" / video


# --- one video (runs in a worker process) ---------------------------------------------------------

_detectors: dict[tuple, FaceDetector] = {}


def _detector(config: PrepareConfig) -> FaceDetector:
    """One detector per process and setting, made on first use (aligned fakes never need one)."""
    settings = {name: getattr(config, name) for name in DETECTOR if hasattr(config, name)}
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


def _init_worker(threads: int, verbose: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    configure_logging(verbose)


def _run_tasks(config: PrepareConfig, phases: list[list[Task]], progress: tqdm) -> Iterator[dict]:
    """Prepare the tasks of each phase in turn (a phase ends before the next starts), yielding
    records as they finish: in this process (``workers`` 0) or in one pool with at most 2 tasks per
    worker in flight, so memory does not grow with the number of videos; or on Ray
    (:mod:`preprocessing.ray_prepare`)."""
    if config.engine == "ray" and any(phases):
        from .ray_prepare import prepare_on_ray

        for record in prepare_on_ray(config, phases):
            yield record
            progress.update()
        return
    if config.workers <= 0 or not any(phases):
        for task in (t for tasks in phases for t in tasks):
            yield prepare_video(config, task)
            progress.update()
        return
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    context = multiprocessing.get_context("spawn")  # safe with CUDA and with torch's thread pools
    with ProcessPoolExecutor(config.workers, mp_context=context, initializer=_init_worker,
                             initargs=(threads, log.isEnabledFor(logging.DEBUG))) as pool:
        try:
            for tasks in phases:
                queue = iter(tasks)
                running = {pool.submit(prepare_video, config, t) for t in _take(queue, 2 * config.workers)}
                while running:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    running |= {pool.submit(prepare_video, config, t) for t in _take(queue, len(finished))}
                    for future in finished:
                        yield future.result()
                        progress.update()
        finally:  # stopped early (SIGTERM, an error): the videos not started are not started
            pool.shutdown(cancel_futures=True)


def _take(iterator: Iterator[Task], n: int) -> list[Task]:
    return [task for _, task in zip(range(n), iterator)]


# --- the run ----------------------------------------------------------------------------------------

def _check_config(config: PrepareConfig, out: Path) -> None:
    """Stop when ``out`` was made with settings that change the crops, unless overwriting."""
    path = out / "config.json"
    if config.overwrite or not path.is_file():
        return
    earlier = json.loads(path.read_text())
    current = json.loads(json.dumps(asdict(config)))
    changed = [f"{k}={earlier.get(k)!r} (now {current[k]!r})" for k in OUTPUT_SETTINGS if earlier.get(k) != current[k]]
    if changed:
        raise PrepareError(f"{out} was prepared with {', '.join(changed)}: use another --out, the same "
                           f"settings, or --overwrite")


def _tasks(table: pd.DataFrame) -> tuple[list[Task], list[Task]]:
    """Videos to detect on (originals, and fakes without an original in the run) and fakes to crop
    with their original's boxes, which must come after."""
    present = set(table["video"])
    detect, align = [], []
    for video, path, original in table[["video", "path", "original"]].itertuples(index=False):
        original = original if original in present else ""
        (align if original else detect).append(Task(video, path, original))
    return detect, align


def _crop_rows(video: pd.Series, record: dict) -> Iterable[list]:
    for face in record["faces"]:
        landmarks = np.asarray(face["landmarks"], dtype=np.float64) - face["crop_box"][:2]
        yield [video["video"], face["crop"], face["mask"], face["real_crop"], face["frame"], face["track"],
               video["label"], video["group"], video["fold"], *np.round(landmarks, 2).ravel().tolist()]


def _merge(out: Path, table: pd.DataFrame, summary: Summary) -> None:
    """Write ``videos.csv`` and ``crops.csv`` from the per-video records, one video at a time."""
    details = []
    with atomic_write(out / "crops.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CROP_COLUMNS)
        for _, video in table.iterrows():
            folder = video_dir(out, video["video"])
            if (folder / DONE).is_file():
                record = json.loads((folder / DONE).read_text())
                rows = list(_crop_rows(video, record))
                writer.writerows(rows)
                summary.crops += len(rows)
                summary.masks += sum(1 for face in record["faces"] if face["mask"])
                summary.no_face += int(not rows)
                summary.self_boxed_fakes += int(video["label"] == 1 and record["boxes_from"] == "self")
                details.append({k: record[k] for k in ("frame_count", "width", "height", "status", "boxes_from")})
            else:
                record = json.loads((folder / FAILED).read_text())
                summary.failures[video["video"]] = record["status"].removeprefix("failed: ")
                details.append({"status": record["status"], "boxes_from": "self"})
    videos = pd.concat([table.reset_index(drop=True), pd.DataFrame(details)], axis=1)
    for column in ("frame_count", "width", "height"):
        videos[column] = videos.get(column, pd.Series(dtype="float")).astype("Int64")
    with atomic_write(out / "videos.csv", "w", newline="", encoding="utf-8") as f:
        videos[list(VIDEO_COLUMNS)].to_csv(f, index=False)


def prepare(config: PrepareConfig) -> Summary:
    """Index ``config.root``, assign folds, prepare every video not yet done, write the tables.

    The notebook entry point; the command line calls it too. Returns the run's :class:`Summary`.
    """
    config = config.resolved()
    out = Path(config.out)
    _check_config(config, out)
    index = build_index(config.dataset, config.root, config.labels)
    write_json(out / "config.json", {**asdict(config), "crop_spec": crop_entry(config.margin)})
    table = index.videos.assign(fold=assign_folds(index.videos["group"], index.videos["label"], config.folds,
                                                  config.seed))
    table = table[in_shard(table["group"], config.shard)].reset_index(drop=True)
    summary = Summary(videos=len(table), absent=index.absent)

    detect, align = _tasks(table)
    todo = [[t for t in tasks if config.overwrite or not (video_dir(out, t.video) / DONE).is_file()]
            for tasks in (detect, align)]
    summary.resumed = len(table) - sum(map(len, todo))
    log.info("%d videos (%d originals or unpaired, %d fakes with an original); %d already done",
             len(table), len(detect), len(align), summary.resumed)
    start = time.perf_counter()
    with logging_redirect_tqdm(), tqdm(total=sum(map(len, todo)), desc="prepare", unit="video") as progress:
        for _ in _run_tasks(config, todo, progress):  # originals first: their fakes read what they write
            summary.prepared += 1
    summary.seconds = round(time.perf_counter() - start, 2)
    _merge(out, table, summary)
    write_json(out / "summary.json", {**asdict(summary), "line": summary.line()})
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m preprocessing.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = PrepareConfig("", "", "")
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="layout of --root")
    parser.add_argument("--root", required=True, type=Path, help="the dataset's folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--labels", type=Path, help="folder dataset: labels file (default: ROOT/labels.csv)")
    add_field_flag(parser, defaults, "frames", "evenly spaced frames per video")
    add_field_flag(parser, defaults, "folds", "number of folds")
    add_field_flag(parser, defaults, "seed", "seed for ordering equal-size groups")
    add_field_flag(parser, defaults, "workers", "worker processes, 0 runs in this process; here the CPU count")
    add_engine_arguments(parser, defaults)
    add_field_flag(parser, defaults, "shard", "K/N: prepare only the groups of shard K of N, one per machine")
    add_field_flag(parser, defaults, "margin", "crop margin per side, as a fraction of the box")
    add_field_flag(parser, defaults, "mask", "difference measure for the masks", choices=MASK_METHODS)
    add_field_flag(parser, defaults, "mask_blur", "Gaussian sigma in pixels applied to both crops first")
    parser.add_argument("--mask-threshold", type=float,
                        help="dissimilarity in [0, 1] that counts as changed (default: 16/255 for pixel, "
                             f"{DEFAULT_THRESHOLDS['ssim']} for ssim)")
    parser.add_argument("--overwrite", action="store_true", help="redo every video, even with other settings")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_detector_arguments(parser, defaults.thresholds)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    configure_logging(args.pop("verbose"))
    names = {f.name for f in fields(PrepareConfig)}
    config = PrepareConfig(**{k: str(v) if isinstance(v, Path) else v for k, v in args.items() if k in names})
    try:
        with exit_on_sigterm():
            summary = prepare(config)
    except (ValueError, FileNotFoundError) as err:  # bad settings or input (PrepareError is a ValueError)
        log.error("%s", err, exc_info=log.isEnabledFor(logging.DEBUG))
        return 2
    log.info("%s; output in %s", summary.line(), os.fspath(config.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
