"""The decode + detect stage, in worker processes feeding a bounded queue of finished videos.

``iterate_faces`` yields one :class:`VideoFaces` per video as soon as it is ready, deciding each
video's frame count when it is submitted, and stops at the deadline: videos not finished by then
are left out (the caller gives them the prior) and the workers are terminated, so a video that
hangs the decoder cannot hold the run past its deadline.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from plumbing.device import device_failed
from plumbing.processes import worker_context
from plumbing.scheduler import in_flight
from preprocessing.cropspec import CropSpec
from preprocessing.detect import FaceDetector
from preprocessing.faces import Face, every_face, find_faces
from preprocessing.follow import DETECT_EVERY
from preprocessing.image import is_image, read_input
from preprocessing.landmarks import LandmarkDetector, LandmarkSpec
from preprocessing.sequences import FaceSequence, run_sequences
from preprocessing.video import RUN_LENGTH, RUNS, Frames, VideoReadError, set_decoder_threads

#: What the scheduler logs when the deadline stops a run of either engine (``%d``: videos in flight).
DEADLINE_WARNING = "deadline reached with %d video(s) in progress: they get the prior"


@dataclass(frozen=True)
class Cutting:
    """How a video's faces become crops: ``specs`` (one per distinct input key: each face is cut once
    per crop key and resized to each spec's input), MTCNN on the whole of every ``detect_every``-th
    frame and around each face's last box between (see :func:`find_faces`), ``tracking`` (off:
    every face of every frame, searched in full, in track 0, or its ``per_frame`` most confident,
    see :func:`every_face`), at most ``max_faces`` faces (the first ones), frames at rounded or
    ``floor``-ed even spacing (see :func:`read_frames`);
    for sequence models, ``runs`` runs of :data:`RUN_LENGTH` consecutive frames read by the same
    decode, each face followed through a run made into one landmark sequence per spec of
    ``landmarks`` (none: no runs read); ``keep_crops``: also the first spec's crops as cut, at the
    video's resolution (for a caller that shows them), where otherwise only the models' inputs are
    kept, which is what crosses from a worker process to the models (a 1080p video's 32 crops as cut
    weigh about 24 MB, pickled through a pipe; at a 128 px input, 1.6 MB)."""

    specs: tuple[CropSpec, ...]
    detect_every: int = DETECT_EVERY
    tracking: bool = True
    max_faces: int | None = None
    floor: bool = False
    per_frame: int | None = None
    runs: int = RUNS
    landmarks: tuple[LandmarkSpec, ...] = ()
    keep_crops: bool = False


@dataclass
class VideoFaces:
    """A video's face crops, or why there are none (``error``). ``cuts``: each spec's model inputs
    (crops resized by :meth:`CropSpec.fit`), by :attr:`CropSpec.input_key`; ``crops``: the first
    spec's crops as cut (:attr:`Cutting.keep_crops`, what a report shows), else its inputs;
    ``sequences``: the landmark sequences of its runs' faces by landmark spec, or why there are
    none (``no_sequence``)."""

    filename: str
    frames_requested: int
    frames_read: int = 0
    frame_ids: list[int] = field(default_factory=list)
    track_ids: list[int] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    cuts: dict[tuple, list[np.ndarray]] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0
    sequences: dict[LandmarkSpec, list[FaceSequence]] = field(default_factory=dict)
    no_sequence: str = ""


def detect_video(filename: str, path: str | Path, frames: int, detector: FaceDetector, cutting: Cutting) -> VideoFaces:
    """Read ``frames`` frames of one video (and its runs, for sequence models), find its faces and
    cut them (make their landmark sequences) as ``cutting`` says; unreadable files become an ``error``."""
    start = time.perf_counter()
    result = VideoFaces(filename, frames)
    try:
        sampled = read_input(path, frames, floor=cutting.floor, runs=cutting.runs if cutting.landmarks else 0)
        if cutting.landmarks:
            result.sequences = run_sequences(sampled, detector, {spec: _landmarker(spec) for spec in cutting.landmarks})
            result.no_sequence = _no_sequence(path, sampled.frame_count, result.sequences)
        result.frames_read = len(sampled)
        if cutting.specs:  # frame models: the spread frames' faces
            faces = find_faces(sampled, detector, detect_every=cutting.detect_every) if cutting.tracking \
                else every_face(sampled, detector, per_frame=cutting.per_frame)
            faces = faces[: cutting.max_faces]
            result.frame_ids = [f.frame for f in faces]
            result.track_ids = [f.track for f in faces]
            result.cuts, result.crops = cut_faces(sampled, faces, cutting.specs, cutting.keep_crops)
            if not faces:
                result.error = f"no face found in {len(sampled)} frames"
    except VideoReadError as err:
        result.error = err.cause
    result.seconds = time.perf_counter() - start
    return result


def cut_faces(sampled: Frames, faces: Sequence[Face], specs: Sequence[CropSpec],
              keep_crops: bool = False) -> tuple[dict[tuple, list[np.ndarray]], list[np.ndarray]]:
    """The models' inputs for ``faces`` of ``sampled`` by :attr:`CropSpec.input_key` (each face cut
    once per crop key, then resized to each spec's input), and the first spec's crops: as cut with
    ``keep_crops``, else its inputs."""
    position = {int(index): i for i, index in enumerate(sampled.indices)}
    cut: dict[tuple, list[np.ndarray]] = {}
    for spec in specs:
        if spec.crop_key not in cut:
            cut[spec.crop_key] = [spec.cut(sampled.images[position[f.frame]], f.box) for f in faces]
    inputs = {spec.input_key: [spec.fit(crop) for crop in cut[spec.crop_key]] for spec in specs}
    return inputs, cut[specs[0].crop_key] if keep_crops else inputs[specs[0].input_key]


_landmarkers: dict[str, LandmarkDetector] = {}  # per process: each landmark model loads once


def _landmarker(spec: LandmarkSpec) -> LandmarkDetector:
    if spec.detector not in _landmarkers:
        _landmarkers[spec.detector] = spec.build_detector()
    return _landmarkers[spec.detector]


def _no_sequence(path: str | Path, frame_count: int, sequences: dict[LandmarkSpec, list[FaceSequence]]) -> str:
    """Why a video gave no landmark sequence ("" where it gave some)."""
    if any(sequences.values()):
        return ""
    if is_image(path):
        return "a still image: no run of frames"
    if frame_count < RUN_LENGTH:
        return f"video shorter than one run ({frame_count} frames < {RUN_LENGTH})"
    return "no face followed through a whole run"


#: Most detection processes :func:`default_workers` starts (each holds a video's frames: about 0.2 GB at 1080p).
MAX_WORKERS = 4


def default_workers() -> int:
    """Detection processes beside the models by default: one per usable CPU, at most
    :data:`MAX_WORKERS` (each runs its torch ops on one thread), so decoding and detecting several
    videos overlap with scoring (on 2 CPUs two took the kernel benchmark's 8 clips in 15.3 s, one in
    17.3 s, none 17.1 s: docs/benchmarks.md); one with a GPU and a single CPU; none on a single CPU
    alone, where a second process only competes for it (``python -m tests.benchmarks.kernel --overlap``)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cpus >= 2:
        return min(cpus, MAX_WORKERS)
    return 1 if torch.cuda.is_available() else 0


_detector: FaceDetector | None = None


#: How far below the scoring process a worker runs (``os.nice``; 10, the ``nice`` command's default).
WORKER_NICENESS = 10


def _init_worker(detector_kwargs: dict, threads: int) -> None:
    global _detector
    torch.set_num_threads(threads)
    set_decoder_threads(threads)
    os.nice(WORKER_NICENESS)
    _detector = FaceDetector(**detector_kwargs)


def _work(filename: str, path: str, frames: int, cutting: Cutting) -> VideoFaces:
    return detect_video(filename, path, frames, _detector, cutting)


class Workers:
    """The decode + detect processes (``count`` of them, each with one :class:`FaceDetector`), started
    on creation so they import and build MTCNN while the caller loads its models, and reusable by
    every :func:`iterate_faces` call until :meth:`close`. ``count=0``: one detector in this process.
    Each process runs torch and the decoder on ``threads`` threads (its share of this process's
    torch threads when the workers were made: one per CPU by default), at :data:`WORKER_NICENESS`
    below this process: the models that run here keep every core while they have work (a slow
    model's workers wait ahead of it), and the workers take what the models leave, without the two
    crowding each other's threads (on 2 CPUs: the kernel benchmark's 8 clips in 16.0 s against
    17.0 s at equal priority, mean of 3 runs taken in turn).
    """

    def __init__(self, detector_kwargs: dict, count: int = 1):
        self.detector_kwargs, self.count = dict(detector_kwargs), count
        self._cpus = torch.get_num_threads()
        self._detector: FaceDetector | None = None
        self._pool = None
        self.restart()

    def configure(self, detector_kwargs: dict, count: int | None = None) -> None:
        """Restart with other detector settings or another process count, if they differ."""
        count = self.count if count is None else count
        if (dict(detector_kwargs), count) != (self.detector_kwargs, self.count):
            self.detector_kwargs, self.count, self._detector = dict(detector_kwargs), count, None
            self.restart()

    @property
    def detector(self) -> FaceDetector:
        """The in-process detector (``count=0``), built on first use."""
        if self._detector is None:
            self._detector = FaceDetector(**self.detector_kwargs)
        return self._detector

    @property
    def threads(self) -> int:
        """Torch and decoder threads per process."""
        return max(1, self._cpus // max(1, self.count))

    def submit(self, filename: str, path: str | Path, frames: int, cutting: Cutting):
        return self._pool.apply_async(_work, (filename, str(path), frames, cutting))

    def restart(self) -> None:
        """Stop every process (whatever it is doing) and start fresh ones."""
        self.close()
        if self.count > 0:
            self._pool = worker_context([__name__]).Pool(
                self.count, initializer=_init_worker, initargs=(self.detector_kwargs, self.threads))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iterate_faces(
    videos: Sequence[tuple[str, Path]],
    plan_frames: Callable[[int], int],
    remaining: Callable[[], float],
    detector_kwargs: dict,
    cutting: Cutting,
    workers: int | Workers = 1,
    queue_size: int = 4,
    video_timeout: float = 300.0,
) -> Iterator[VideoFaces]:
    """Decode and detect ``videos`` (``(filename, path)`` pairs), yielding results as they finish.

    ``plan_frames(videos_left)`` gives the frame count for the next video (0: do not start it);
    ``remaining()`` the seconds left before the deadline. A video still unfinished after
    ``video_timeout`` seconds (a hung decoder, a crashed worker) becomes an error and the workers
    are restarted. ``workers``: a number of processes started for this call, or running
    :class:`Workers` to reuse (restarted first if their settings differ, and after a deadline that
    left videos in progress). ``workers=0`` runs everything in this process (the deadline and the
    timeout are then only checked between videos).
    """
    own = not isinstance(workers, Workers)
    pool = Workers(detector_kwargs, workers) if own else workers
    pool.configure(detector_kwargs)
    try:
        if pool.count == 0:
            for i, (filename, path) in enumerate(videos):
                frames = plan_frames(len(videos) - i)
                if frames <= 0 or remaining() <= 0:
                    return
                yield detect_video(filename, path, frames, pool.detector, cutting)
            return
        finished = in_flight(planned(videos, plan_frames), _WorkerJobs(pool, cutting, own), queue_size,
                             remaining=remaining, timeout=video_timeout, late=DEADLINE_WARNING)
        with contextlib.closing(finished):
            for done in finished:
                filename, _, frames = done.item
                if done.timed_out:
                    error = f"not finished after {video_timeout:g} s (decoder hung or worker died)"
                    yield VideoFaces(filename, frames, error=error)
                elif done.error is not None and device_failed(done.error):  # the device, not the video: stop
                    raise done.error
                elif done.error is not None:  # an exception raised inside the worker
                    error = f"detection failed: {type(done.error).__name__}: {done.error}"
                    yield VideoFaces(filename, frames, error=error)
                else:
                    yield done.value
    finally:
        if own:
            pool.close()


def planned(videos: Sequence[tuple[str, Path]], plan_frames: Callable[[int], int]) -> Iterator[tuple[str, Path, int]]:
    """``(filename, path, frames)`` for each video in turn, its frame count planned when it is drawn;
    ends at the first video planned no frames."""
    for i, (filename, path) in enumerate(videos):
        frames = plan_frames(len(videos) - i)
        if frames <= 0:
            return
        yield filename, path, frames


class _WorkerJobs:
    """:class:`Workers` as the scheduler's jobs: a video per job; a video stuck restarts the processes."""

    def __init__(self, pool: Workers, cutting: Cutting, own: bool):
        self.pool, self.cutting, self.own = pool, cutting, own

    def submit(self, item: tuple[str, Path, int]):
        return self.pool.submit(*item, self.cutting)

    def wait(self, handles: list, timeout: float | None) -> list:
        ready = [job for job in handles if job.ready()]
        if not ready:
            time.sleep(0.02)
        return ready

    def result(self, handle) -> VideoFaces:
        return handle.get()

    def cancel(self, handles: list) -> bool:
        self.pool.restart()
        return True

    def stop(self, handles: list) -> None:
        if not self.own:  # videos left running past the deadline must not hold the reused workers
            self.pool.restart()
