"""The kernel's run: score a list of videos into a submission and its detail file, under a deadline.

The submission is rewritten atomically as videos finish, so a complete, valid file exists from the
first second; videos not reached by the deadline, unreadable or without faces get the prior. Each
finished video is appended to a progress log beside the submission, from which a killed run
restarted with the same settings resumes. The device failing (CUDA out of memory, a CUDA error)
stops the run with :class:`ScoringFailed`: what was scored is kept and written, the rest resumes
later, rather than every video after it quietly getting the prior.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from plumbing.device import device_failed
from plumbing.fileio import atomic_write
from submission.io import COLUMNS, write_submission

from .budget import Budget
from .engines import scored
from .ensemble import Ensemble
from .pipeline import VideoFaces, Workers
from .progress import ProgressLog
from .scoring import Settings, label_of, tables

log = logging.getLogger("kernels.predict")  # the command's name in its log lines


class ScoringFailed(RuntimeError):
    """The device failed during a run; the message says what was kept and how to resume."""


def write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        table.to_csv(f, index=False, float_format="%.6f")


def details_path(out: Path) -> Path:
    return out.with_name(out.stem + "_details.csv")


def run(videos: Sequence[tuple[str, Path]], ensemble: Ensemble, out: Path, settings: Settings,
        fresh: bool = False, started: float | None = None,
        on_video: Callable[[VideoFaces, dict], None] | None = None, workers: Workers | None = None) -> pd.DataFrame:
    """Score ``videos`` (``(filename, path)`` pairs) into ``out`` and its detail file; returns the details.

    The deadline counts from ``started`` (a ``time.monotonic()`` reading; default: now).
    ``on_video(faces, record)`` is called for each video scored by this call (not for those resumed),
    with its crops and its progress record. ``workers``: running detection :class:`Workers` to use
    (default: ``settings.workers`` processes started for this call).
    """
    budget = Budget(settings.deadline, start=started)
    stacked = {m.name: m.strategy for m in ensemble.stacking.members} if ensemble.stacking else {}
    for name, model, _ in ensemble.frame_models:
        for fitted, fitted_on in (("calibrated", model.calibration.strategy), ("stacked", stacked.get(name))):
            if fitted_on and fitted_on != settings.strategy_of(model):
                log.warning("%s: %s on %r video scores, applied to %r ones", name, fitted, fitted_on,
                            settings.strategy_of(model))
    progress = ProgressLog(out.with_suffix(".progress.jsonl"), settings.signature(ensemble), fresh)
    todo = [(name, path) for name, path in videos if name not in progress.records]
    if len(todo) < len(videos):
        log.info("resuming: %d of %d videos already done", len(videos) - len(todo), len(videos))
    unreached = "not reached before the deadline"
    labels = {name: label_of(progress.records.get(name), ensemble, settings)[0] for name, _ in videos}
    refreshed = -math.inf

    def refresh() -> None:
        """Rewrite the submission (complete: the prior where no result yet), at most every 2 s."""
        nonlocal refreshed
        if time.monotonic() - refreshed >= 2.0:
            write_submission(out, pd.DataFrame(sorted(labels.items()), columns=COLUMNS))
            refreshed = time.monotonic()

    refresh()
    try:
        with logging_redirect_tqdm():
            stage = scored(todo, ensemble, budget, settings, keep_crops=on_video is not None,
                           workers=workers)
            for faces, record in tqdm(stage, total=len(todo), desc="predict", unit="video"):
                budget.record(faces.frames_requested, record["seconds"])
                if record["status"] != "ok":
                    log.warning("%s: %s; it gets the prior %.2f", faces.filename, record["reason"], settings.prior)
                progress.append(record)
                if on_video is not None:
                    on_video(faces, record)
                labels[faces.filename] = label_of(record, ensemble, settings)[0]
                refresh()
    except Exception as err:
        if not device_failed(err):
            raise
        _write_outputs(out, videos, progress, ensemble, settings, "not scored: the device failed")
        cause = next(iter(str(err).strip().splitlines()), "")
        raise ScoringFailed(f"the device failed after {len(progress.records)} of {len(videos)} "
                            f"videos ({type(err).__name__}: {cause}); they are kept in {progress.path} and {out} gives "
                            "the rest the prior: rerun the same command to resume") from err
    details = _write_outputs(out, videos, progress, ensemble, settings, unreached)
    missed = int((details["reason"] == unreached).sum())
    if missed:
        log.warning("%d video(s) not reached before the deadline got the prior", missed)
    return details


def _write_outputs(out: Path, videos: Sequence[tuple[str, Path]], progress: ProgressLog, ensemble: Ensemble,
                   settings: Settings, unreached: str) -> pd.DataFrame:
    """The submission and the detail file from the progress so far (``unreached``: why a video without a
    record got the prior); returns the details."""
    submission, details = tables(videos, progress.records, ensemble, settings, unreached)
    write_submission(out, submission)
    write_csv(details_path(out), details)
    return details
