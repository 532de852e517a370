"""The kernel's engines behind one :func:`scored`: ``local`` (decode + detect in worker processes,
:mod:`kernels.pipeline`, the models in this process) or ``ray`` (:mod:`kernels.ray_engine`)."""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Iterator, Sequence

from .budget import Budget
from .ensemble import Ensemble
from .pipeline import VideoFaces, Workers, iterate_faces
from .scoring import Settings, score_faces


def scored(videos: Sequence[tuple[str, Path]], ensemble: Ensemble, budget: Budget, settings: Settings,
           keep_crops: bool = False, workers: Workers | None = None) -> Iterator[tuple[VideoFaces, dict]]:
    """Each video's faces and progress record as it finishes, on ``settings.engine`` (``workers``:
    running detection :class:`Workers` for the local engine; default: ``settings.workers`` processes)."""
    plan = functools.partial(budget.frames_for_next, max_frames=settings.frames, min_frames=settings.min_frames)
    if settings.engine == "ray":
        from .ray_engine import scored_on_ray

        yield from scored_on_ray(videos, ensemble, plan, budget.remaining, settings, keep_crops)
        return
    last = time.monotonic()
    for faces in iterate_faces(videos, plan, budget.remaining, settings.detector, settings.cutting(ensemble, keep_crops),
                               settings.workers if workers is None else workers,
                               video_timeout=settings.video_timeout):
        yield faces, score_faces(faces, ensemble, time.monotonic() - last)
        last = time.monotonic()
