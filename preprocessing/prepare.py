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
import contextlib
import dataclasses
import functools
import logging
import os
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from plumbing.cli import add_field_flag, exit_on_sigterm
from plumbing.cluster import add_engine_arguments
from plumbing.device import worker_devices
from plumbing.fileio import changed_settings, write_json
from plumbing.logs import configure_logging
from plumbing.processes import worker_context
from plumbing.scheduler import PoolJobs, in_flight

from .cropspec import crop_entry
from .detect import add_detector_arguments
from .folds import assign_folds
from .index import DATASETS, build_index
from .masks import DEFAULT_THRESHOLDS, MASK_METHODS
from .prepare_video import PrepareConfig, PrepareError, Task, prepare_video, shard_range, use_device
from .prepared import DONE, video_dir, write_tables
from .video import set_decoder_threads

log = logging.getLogger("prepare")

#: Settings that change what is written for a video: a run resuming into an --out made with other
#: values would mix two kinds of crops, so it stops (unless --overwrite).
OUTPUT_SETTINGS = ("dataset", "root", "labels", "frames", "margin", "thresholds", "min_score", "min_size",
                   "region_grow", "region_size", "refine_steps", "mask", "mask_blur", "mask_threshold")


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


def in_shard(groups: pd.Series, shard: str) -> pd.Series:
    """Whether each group belongs to ``shard`` (a stable hash of the group name, so every machine agrees)."""
    k, n = shard_range(shard)
    return groups.map(lambda g: zlib.crc32(g.encode()) % n == k)


def _init_worker(threads: int, verbose: bool, devices) -> None:
    """A worker process: ``threads`` torch threads, and its detection device, the next of ``devices``
    (a queue holding one per worker: :func:`detection_plan`)."""
    import torch

    torch.set_num_threads(threads)
    set_decoder_threads(threads)
    configure_logging(verbose)
    use_device(devices.get())


def detection_plan(config: PrepareConfig) -> list[str]:
    """The device each worker process detects on, by :func:`plumbing.device.worker_devices`' rule:
    the cards shared round robin, at most ``PER_CARD`` workers each, the others on the CPU (a device
    named with its index holds them all)."""
    return [str(device) for device in worker_devices(config.workers, config.device)]


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
    context = worker_context(["preprocessing.prepare"])  # forked from a fresh server: safe with CUDA and torch's thread pools
    devices = context.Queue()
    plan = detection_plan(config)
    for device in plan:
        devices.put(device)
    log.info("face detection in %d worker(s): %s", config.workers,
             ", ".join(f"{plan.count(d)} on {d}" for d in dict.fromkeys(plan)))
    with ProcessPoolExecutor(config.workers, mp_context=context, initializer=_init_worker,
                             initargs=(threads, log.isEnabledFor(logging.DEBUG), devices)) as pool:
        try:
            jobs = PoolJobs(pool, functools.partial(prepare_video, config))
            for tasks in phases:
                with contextlib.closing(in_flight(tasks, jobs, 2 * config.workers)) as finished:
                    for done in finished:
                        if done.error is not None:
                            raise done.error
                        yield done.value
                        progress.update()
        finally:  # stopped early (SIGTERM, an error): the videos not started are not started
            pool.shutdown(cancel_futures=True)


def _check_config(config: PrepareConfig, out: Path) -> None:
    """Stop when ``out`` was made with settings that change the crops, unless overwriting."""
    changed = [] if config.overwrite else changed_settings(out / "config.json", asdict(config), OUTPUT_SETTINGS)
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
    summary = dataclasses.replace(summary, **write_tables(out, table))
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

