"""The kernel as a notebook sees it: load an ensemble, score videos, get tables back.

    from kernels.api import load_ensemble, score_videos

    ensemble = load_ensemble(["weights/lite0.pt"])
    scores = score_videos("videos/", ensemble, frames=8, out="runs/nb/submission.csv")
    scores.videos          # one row per video, most fake first (the kernel's detail table + path)
    scores.tracks          # one row per face track: score per model and for the ensemble
    scores.frames          # one row per face crop: frame index, track, probability per model, crop

    scorer = Scorer(["weights/lite0.pt"], frames=8)   # models loaded, detection worker started once
    first = scorer.score("videos/a/", out="runs/a/submission.csv")
    again = scorer.score("videos/b/", out="runs/b/submission.csv")  # no start-up this time
    scorer.close()

Scoring is :func:`kernels.runner.run` itself (same crops, models, strategies, deadline and resume
log); this module only reshapes its progress records into tables. Probabilities are fake
probabilities in [0, 1]; video labels are clipped to [eps, 1 - eps] as in the submission, track
and frame probabilities are not.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from plumbing.device import check_device, default_device
from plumbing.fileio import write_png

from .aggregate import STRATEGIES
from .ensemble import Ensemble
from .pipeline import VideoFaces, Workers
from .inputs import named_videos, resolve_models
from .runner import run
from .scoring import Settings
from .progress import ProgressLog


@dataclass
class Scores:
    """A scored set of videos as three tables (see the module docstring)."""

    videos: pd.DataFrame
    tracks: pd.DataFrame
    frames: pd.DataFrame
    models: list[str]
    strategy: str

    def video(self, filename: str) -> "Scores":
        """The same tables restricted to one video (``filename`` as in ``videos.filename``)."""
        if filename not in set(self.videos["filename"]):
            raise KeyError(f"no video named {filename!r}; known: {sorted(self.videos['filename'])[:5]}...")
        pick = lambda t: t[t["filename"] == filename].reset_index(drop=True)  # noqa: E731
        return Scores(pick(self.videos), pick(self.tracks), pick(self.frames), self.models, self.strategy)


def load_ensemble(weights: Sequence[str | Path] | None = None, model_weights: Sequence[float] | None = None,
                  device: str | None = None, precision: str = "auto", stacking: str | Path | None = None) -> Ensemble:
    """Load checkpoints strictly, with a stacking file, as ``kernels.predict`` does
    (:func:`kernels.inputs.resolve_models`); a bad file raises ``CheckpointError`` or ``StackingError``."""
    paths, stacking = resolve_models(weights, stacking)
    return Ensemble.load(paths, model_weights, device, precision, stacking=stacking)


def on_device(settings: dict, device: str | torch.device) -> dict:
    """:class:`kernels.scoring.Settings` fields with face detection on ``device`` (the models'), unless
    their ``detector`` names a device of its own: one device choice reaches MTCNN and the models."""
    detector = dict(settings.get("detector") or {})
    if detector.get("device") is None:
        detector["device"] = str(device)
    return {**settings, "detector": detector}


def frame_table(records: Sequence[dict], ensemble: Ensemble, crops: dict[str, list] | None = None) -> pd.DataFrame:
    """One row per face crop of scored videos: ``filename, frame, track, prob_<frame model>..., prob``
    (``prob`` = the frame models' weighted mean, stacked or not) and ``crop`` (RGB uint8 array, a PNG path, or None
    when the crop was not kept, e.g. for a video resumed from an earlier run)."""
    names = [name for name, _, _ in ensemble.frame_models]
    rows = []
    for record in records if names else ():
        if record["status"] != "ok":
            continue
        kept = (crops or {}).get(record["filename"]) or [None] * len(record["frame_ids"])
        for i, (frame, track) in enumerate(zip(record["frame_ids"], record["track_ids"])):
            row = {"filename": record["filename"], "frame": frame, "track": track}
            row.update({f"prob_{name}": record["probs"][name][i] for name in names})
            row["prob"] = ensemble.mean({name: row[f"prob_{name}"] for name in names})
            row["crop"] = kept[i]
            rows.append(row)
    columns = ["filename", "frame", "track", *(f"prob_{n}" for n in names), "prob", "crop"]
    return pd.DataFrame(rows, columns=columns)


def track_table(frames: pd.DataFrame, ensemble: Ensemble, strategy: str) -> pd.DataFrame:
    """One row per face track: ``filename, track, frames, score_<frame model>..., score``, each
    model's frames reduced by ``strategy``'s per-track rule and the models by their weighted mean
    (a stacking file combines whole videos only)."""
    per_track = STRATEGIES[strategy][0]
    names = [name for name, _, _ in ensemble.frame_models]
    rows = []
    for (filename, track), group in frames.groupby(["filename", "track"], sort=True):
        row = {"filename": filename, "track": track, "frames": len(group)}
        row.update({f"score_{n}": per_track(group[f"prob_{n}"].to_numpy()) for n in names})
        row["score"] = ensemble.mean({n: row[f"score_{n}"] for n in names})
        rows.append(row)
    columns = ["filename", "track", "frames", *(f"score_{n}" for n in names), "score"]
    return pd.DataFrame(rows, columns=columns)


def score_videos(videos: str | Path | Sequence[str | Path], ensemble: Ensemble | Sequence[str | Path] | None = None,
                 out: str | Path = "output/scores/submission.csv", crops_dir: str | Path | None = None,
                 keep_crops: bool = True, fresh: bool = False, workers: Workers | None = None, **settings) -> Scores:
    """Score one video, a list of videos or a folder (searched recursively) with ``ensemble`` (an
    :class:`Ensemble` or checkpoint paths; default: as ``kernels.predict``'s).

    Writes what ``python -m kernels.predict`` writes at ``out`` (submission, details, resume log).
    ``settings`` are :class:`kernels.scoring.Settings` fields (``frames``, ``strategy``, ``workers``,
    ``deadline``...). Crops are kept as arrays (``keep_crops``), or written as
    ``crops_dir/<filename>/<frame:05d>_<track>.png`` and given by path. ``workers``: running detection
    :class:`Workers` to reuse (see :class:`Scorer`). Faces are detected on the ensemble's device
    unless ``detector`` names another.
    """
    if not isinstance(ensemble, Ensemble):
        ensemble = load_ensemble(ensemble)
    settings = on_device(settings, ensemble.device)
    given = [Path(videos)] if isinstance(videos, (str, Path)) else [Path(v) for v in videos]
    out = Path(out)
    named = named_videos(given, out.parent / "sample_videos")
    config = Settings(**settings)
    crops: dict[str, list] = {}

    def keep(faces: VideoFaces, record: dict) -> None:
        if crops_dir is not None:
            paths = [Path(crops_dir) / faces.filename / f"{f:05d}_{t}.png" for f, t in zip(faces.frame_ids, faces.track_ids)]
            for path, crop in zip(paths, faces.crops):
                write_png(path, crop)
            crops[faces.filename] = paths
        elif keep_crops:
            crops[faces.filename] = list(faces.crops)

    details = run(named, ensemble, out, config, fresh, on_video=keep, workers=workers)
    records = ProgressLog(out.with_suffix(".progress.jsonl"), config.signature(ensemble)).records
    paths = {name: Path(path) for name, path in named}
    frames = frame_table([records[name] for name, _ in sorted(named) if name in records], ensemble, crops)
    details.insert(1, "path", details["filename"].map(paths))
    table = details.sort_values(["label", "filename"], ascending=[False, True], kind="stable").reset_index(drop=True)
    strategy = config.strategy or next((m.spec.aggregate for _, m, _ in ensemble.frame_models), "logitmean")
    return Scores(table, track_table(frames, ensemble, strategy), frames, list(ensemble.names), strategy)


class Scorer:
    """:func:`score_videos` with the start-up paid once: the detection workers start first, the models
    load meanwhile, and every :meth:`score` call reuses both (a notebook scoring again and again).

    ``settings`` are :class:`kernels.scoring.Settings` fields used by every call; a call may override
    them (other detector settings or ``workers`` restart the workers). ``device`` (default: CUDA when
    present) runs the models and the face detection. Close it (or use ``with``) to stop the workers.
    """

    def __init__(self, weights: Sequence[str | Path] | None = None, model_weights: Sequence[float] | None = None,
                 device: str | None = None, precision: str = "auto", stacking: str | Path | None = None, **settings):
        device = check_device(device) if device is not None else default_device()
        self.settings = on_device(settings, device)
        config = Settings(**self.settings)
        self.workers = Workers(config.detector, config.workers)
        try:
            self.ensemble = load_ensemble(weights, model_weights, device, precision, stacking)
        except BaseException:
            self.workers.close()
            raise

    def score(self, videos: str | Path | Sequence[str | Path], out: str | Path = "output/scores/submission.csv",
              **options) -> Scores:
        """:func:`score_videos` with this scorer's models and workers (``options``: its keyword arguments)."""
        options = {**self.settings, **options}
        self.workers.configure(self.workers.detector_kwargs, options.pop("workers", self.workers.count))
        return score_videos(videos, self.ensemble, out, workers=self.workers, **options)

    def close(self) -> None:
        self.workers.close()

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
