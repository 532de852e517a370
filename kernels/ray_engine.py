"""The kernel's engine on Ray: decoding + face detection as CPU tasks, the models as actors.

A task per video decodes and detects (:func:`kernels.pipeline.detect_video`) and leaves its crops
in Ray's object store; a model actor, which loaded the checkpoints once (one replica per GPU of the
cluster with a GPU each, else one per node beside its detection tasks, as the local engine's
models run beside its workers), scores them from there and sends the driver the
video's progress record. At most two videos per detection slot are in flight, so memory stays flat
on any folder. The driver (:func:`kernels.runner.run`) writes every output; it reads the checkpoints'
names, digests and crop specs without holding their weights (``python -m kernels.predict`` loads its
ensemble on ``meta`` for Ray), and logs where the replicas run and the precision each resolved there.
The replicas follow ``--device``: ``cpu`` keeps them off the GPUs (:func:`replica_device`).

Faults: a task or actor whose worker process or node dies is retried, at most ``RETRIES`` times; a
video that fails for its own reason (unreadable, no face, a model error) comes back once as a
record with the reason, and one unfinished after ``video_timeout`` seconds is cancelled and
recorded; neither is retried. A replica's device failing (out of memory, a CUDA error) stops the run
(:class:`kernels.runner.ScoringFailed`). At the deadline the videos in flight are cancelled and left
out (the caller gives them the prior).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import ray
import torch

from plumbing.cluster import ray_session
from plumbing.device import DeviceError, device_failed
from plumbing.scheduler import RayJobs, in_flight
from preprocessing.detect import FaceDetector

from .ensemble import Ensemble
from .pipeline import DEADLINE_WARNING, Cutting, VideoFaces, detect_video, planned
from .scoring import Settings, score_faces

log = logging.getLogger(__name__)

RETRIES = 2
_detectors: dict[tuple, FaceDetector] = {}  # per worker process: MTCNN loads once
_replicas: dict[tuple, list] = {}  # per Ray session and ensemble: the next run reuses the loaded models


@ray.remote(num_cpus=1, max_retries=RETRIES, scheduling_strategy="SPREAD")
def _detect(filename: str, path: str, frames: int, detector: dict, cutting: Cutting) -> tuple[VideoFaces, str]:
    """One video's faces (on this worker's CPU) and the id of the node that found them."""
    key = tuple(sorted(detector.items()))
    if key not in _detectors:
        _detectors[key] = FaceDetector(**detector)
    faces = detect_video(filename, path, frames, _detectors[key], cutting)
    return faces, ray.get_runtime_context().get_node_id()


@ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)
class _Scorer:
    """The ensemble, loaded once on this replica's ``device`` (``cuda``: the GPU Ray gave it). It reserves
    no CPU: on a CPU-only node it shares the cores with the detection tasks."""

    def __init__(self, paths: list[str], weights: list[float], precision: str, batch_size: int, spec: dict,
                 device: str):
        self.ensemble = Ensemble.load(paths, weights, device, precision, batch_size=batch_size, spec=spec)

    def describe(self) -> tuple[str, list[str]]:
        """Where this replica's models run and the precision each resolved there."""
        return str(self.ensemble.device), self.ensemble.precisions

    def score(self, detected: tuple[VideoFaces, str], keep_crops: bool) -> tuple[VideoFaces, dict]:
        faces, node = detected
        record = {**score_faces(faces, self.ensemble, 0.0), "node": node}
        return faces if keep_crops else dataclasses.replace(faces, crops=[]), record


def replica_device(gpus: int, device: str | None) -> str:
    """Where the model replicas run, by the command's ``--device``: ``cpu`` keeps them on the CPU
    even where the cluster has GPUs; ``cuda`` (any index: Ray gives each replica its own card) or none
    puts them on the GPUs when the cluster has some."""
    if device is not None and torch.device(device).type == "cpu":
        return "cpu"
    if device is not None and not gpus:
        raise DeviceError(f"--device {device}: the Ray cluster has no GPU")
    return "cuda" if gpus else "cpu"


def _scorers(ensemble: Ensemble, gpus: int, device: str) -> list:
    """The model replicas for ``ensemble`` in this Ray session, on ``device`` (:func:`replica_device`):
    one per GPU, else one per node."""
    count = gpus if device == "cuda" else sum(node["Alive"] for node in ray.nodes())
    context = ray.get_runtime_context()  # the driver's node and job: this session alone
    key = (context.get_node_id(), context.get_job_id(), tuple(ensemble.paths), tuple(ensemble.weights.tolist()),
           ensemble.precision, ensemble.batch_size, tuple(sorted(ensemble.spec.items())), count, device)
    if key not in _replicas:
        options = {"num_cpus": 0, "num_gpus": int(device == "cuda"), "scheduling_strategy": "SPREAD"}
        _replicas[key] = [_Scorer.options(**options).remote(ensemble.paths, ensemble.weights.tolist(),
                                                            ensemble.precision, ensemble.batch_size, ensemble.spec,
                                                            device)
                          for _ in range(count)]
    return _replicas[key]


def _cause(err: Exception) -> Exception:
    """The error inside the Ray task errors that wrap it."""
    while isinstance(err, ray.exceptions.RayTaskError) and getattr(err, "cause", None) is not None:
        err = err.cause
    return err


def _reason(err: Exception) -> str:
    """``failed on Ray: <cause>: <its first line>``, through the task errors that wrap the cause."""
    err = _cause(err)
    first = next(iter(str(err).strip().splitlines()), "")
    return f"failed on Ray: {type(err).__name__}" + (f": {first}" if first else "")


def _failed(filename: str, frames: int, reason: str, ensemble: Ensemble) -> tuple[VideoFaces, dict]:
    faces = VideoFaces(filename, frames, error=reason)
    return faces, score_faces(faces, ensemble, 0.0)


def scored_on_ray(videos: Sequence[tuple[str, Path]], ensemble: Ensemble, plan_frames: Callable[[int], int],
                  remaining: Callable[[], float], settings: Settings,
                  keep_crops: bool = False) -> Iterator[tuple[VideoFaces, dict]]:
    """Each video's faces (without crops unless ``keep_crops``) and progress record, as they finish.

    ``plan_frames`` and ``remaining`` as for :func:`kernels.pipeline.iterate_faces`. Embedded Ray
    gets ``settings.workers`` CPUs, one detection task each; ``settings.address`` joins a cluster
    instead, with a detection task per CPU. ``record["seconds"]`` is the wall time since the
    previous video finished.
    """
    detector, cutting = {**settings.detector, "device": "cpu"}, settings.cutting(ensemble, keep_crops)
    with ray_session(settings.address, num_cpus=max(settings.workers, 1)):
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        slots = max(int(resources.get("CPU", 1)), 1)
        scorers = _scorers(ensemble, gpus, replica_device(gpus, settings.detector.get("device")))
        replicas = ray.get([scorer.describe.remote() for scorer in scorers])  # loaded: where, in what precision
        log.info("Ray: %d detection slot(s), %d model replica(s): %s", slots, len(scorers),
                 "; ".join(f"{device} in {precisions}" for device, precisions in sorted(set(
                     (device, tuple(precisions)) for device, precisions in replicas))))
        turn = itertools.count()

        def submit(item: tuple[str, Path, int]) -> tuple:
            filename, path, frames = item
            detected = _detect.remote(filename, str(path), frames, detector, cutting)
            return scorers[next(turn) % len(scorers)].score.remote(detected, keep_crops), detected

        last = time.monotonic()
        finished = in_flight(planned(videos, plan_frames), RayJobs(ray, submit), 2 * slots, remaining=remaining,
                             timeout=settings.video_timeout, late=DEADLINE_WARNING)
        with contextlib.closing(finished):
            for done in finished:
                filename, _, frames = done.item
                if done.timed_out:
                    yield _failed(filename, frames, f"not finished after {settings.video_timeout:g} s", ensemble)
                    continue
                if done.error is None:
                    faces, record = done.value
                elif device_failed(_cause(done.error)):  # a replica's device, not the video: the run stops
                    raise _cause(done.error) from done.error
                elif isinstance(done.error, ray.exceptions.RayError):  # retries spent, or an error outside the video
                    faces, record = _failed(filename, frames, _reason(done.error), ensemble)
                else:
                    raise done.error
                record["seconds"] = round(time.monotonic() - last, 3)
                yield faces, record
                last = time.monotonic()
