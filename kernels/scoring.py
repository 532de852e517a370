"""The kernel's scoring core: a run's settings (and what a resumed run must share), one video's
progress record, and the labels and tables made from the records.

Probabilities are fake probabilities in [0, 1]; labels are clipped to ``[eps, 1 - eps]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from plumbing.device import device_failed
from preprocessing.follow import DETECT_EVERY
from preprocessing.video import FRAMES, RUNS

from .aggregate import aggregate, logitmean
from .ensemble import Ensemble
from .pipeline import Cutting, VideoFaces, default_workers


@dataclass
class Settings:
    """Everything that decides a run's predictions besides the videos and the checkpoints."""

    frames: int = FRAMES
    min_frames: int = 8
    strategy: str | None = None  # None: each model's own rule (its crop spec's aggregate)
    prior: float = 0.5
    eps: float = 0.01
    detect_every: int = DETECT_EVERY
    tracking: bool = True
    max_faces: int | None = None
    floor: bool = False
    per_frame: int | None = None  # with tracking off: each frame's most confident faces only
    detector: dict = field(default_factory=dict)  # FaceDetector keyword arguments
    deadline: float | None = None
    workers: int = field(default_factory=default_workers)
    video_timeout: float = 300.0
    engine: str = "local"  # or "ray" (kernels.ray_engine), embedded or on the cluster at ``address``
    address: str | None = None
    runs: int = RUNS  # runs of consecutive frames per video for sequence models (read only when one is given)

    def signature(self, ensemble: Ensemble) -> dict:
        """What a resumed run must share with the run it continues."""
        detection = {k: v for k, v in self.detector.items()
                     if k in ("thresholds", "min_score", "min_size", "scale", "resample", "region_grow", "region_size",
                              "refine_steps")}
        return {"weights": ensemble.digests, "stacking": ensemble.stacking_digest, "frames": self.frames, "min_frames": self.min_frames,
                "specs": [m.spec.to_dict() for m in ensemble.models], **self._cutting_fields(),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in detection.items()}}

    def strategy_of(self, model) -> str:
        """The frame -> video rule for ``model``: the one asked for, else the model's own."""
        return self.strategy or model.spec.aggregate

    def cutting(self, ensemble: Ensemble, keep_crops: bool = False) -> Cutting:
        """How this run's faces are found and cut (``keep_crops``: see :class:`Cutting`)."""
        return Cutting(ensemble.crop_specs, landmarks=ensemble.landmark_specs, keep_crops=keep_crops,
                       **self._cutting_fields())

    def _cutting_fields(self) -> dict:
        """How faces are found and cut: these settings of :class:`Cutting`'s fields (all but its
        specs, which the models give, and whether the crops as cut are kept, which the caller says)."""
        return {f.name: getattr(self, f.name) for f in fields(Cutting) if f.name not in ("specs", "landmarks", "keep_crops")}


def score_faces(faces: VideoFaces, ensemble: Ensemble, seconds: float) -> dict:
    """One video's progress record: per frame model its faces' probabilities, per sequence model its
    blocks' (``blocks``: ``probs``, the ``sequences`` they come from, and why it abstained:
    ``abstained``), or the reason for the prior (its faces' error, a model failing on it, a model
    giving NaN or infinite probabilities). The device failing (out of memory, a CUDA error:
    :func:`plumbing.device.device_failed`) is no reason of this video's: it is raised, to stop the run."""
    record = {"filename": faces.filename, "status": "ok", "reason": "", "frames_requested": faces.frames_requested,
              "frames_read": faces.frames_read, "faces": len(faces.crops), "tracks": len(set(faces.track_ids)),
              "frame_ids": faces.frame_ids, "track_ids": faces.track_ids, "probs": {}, "blocks": {}}
    if faces.error:
        record.update(status="prior", reason=faces.error)
    else:
        try:
            probs = ensemble.predict(faces.cuts)
            sequences = {spec: [s.landmarks for s in found] for spec, found in faces.sequences.items()}
            blocks = ensemble.predict_blocks(sequences)
        except Exception as err:  # a model failing on one video must not end the run; the device failing must
            if device_failed(err):
                raise
            record.update(status="prior", reason=f"model failed: {type(err).__name__}: {err}")
        else:
            precisions = dict(zip(ensemble.names, ensemble.precisions))
            broken = [f"{name} ({precisions[name]})" for name, p in {**probs, **blocks}.items() if not np.isfinite(p).all()]
            if broken:
                record.update(status="prior", reason=f"non-finite probabilities from {', '.join(broken)}")
            else:
                record["probs"] = {k: v.tolist() for k, v in probs.items()}
                for name, model in ensemble.sequence_models:
                    reason = "" if len(blocks[name]) else \
                        faces.no_sequence or f"no sequence as long as its block ({model.config.block} frames)"
                    record["blocks"][name] = {"probs": blocks[name].tolist(),
                                              "sequences": len(sequences.get(model.spec, [])), "abstained": reason}
                if not ensemble.frame_models and all(b["abstained"] for b in record["blocks"].values()):
                    record.update(status="prior", reason="; ".join(sorted({b["abstained"] for b in record["blocks"].values()})))
    record["seconds"] = round(seconds, 3)
    return record


def label_of(record: dict | None, ensemble: Ensemble, settings: Settings) -> tuple[float, dict[str, float]]:
    """The submission probability for one video (clipped) and each model's video score (by the
    strategy, then the model's calibration)."""
    if record is None or record["status"] != "ok":
        return float(np.clip(settings.prior, settings.eps, 1 - settings.eps)), {}
    scores = {name: model.calibration(aggregate(record["probs"][name], record["track_ids"], settings.strategy_of(model)))
              for name, model, _ in ensemble.frame_models}
    for name, model in ensemble.sequence_models:  # blocks -> video: the sigmoid of their mean logit; none: abstains
        blocks = record["blocks"][name]["probs"]
        if blocks:
            scores[name] = model.calibration(logitmean(blocks))
    return float(np.clip(ensemble.combine(scores), settings.eps, 1 - settings.eps)), scores


def tables(videos: Sequence[tuple[str, Path]], records: dict[str, dict], ensemble: Ensemble,
           settings: Settings, unreached: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The submission and the detail table, one row per video, sorted by file name."""
    rows = []
    for filename, _ in sorted(videos):
        record = records.get(filename)
        label, scores = label_of(record, ensemble, settings)
        row = {"filename": filename, "label": label}
        if record is None:
            row.update(status="prior", reason=unreached)
        else:
            row.update({k: record[k] for k in ("status", "reason", "frames_requested", "frames_read",
                                               "faces", "tracks", "seconds")})
        row.update({f"score_{name}": scores.get(name, math.nan) for name in ensemble.names})
        for name, _ in ensemble.sequence_models:
            blocks = (record or {}).get("blocks", {}).get(name, {})
            row.update({f"blocks_{name}": len(blocks.get("probs", [])), f"sequences_{name}": blocks.get("sequences", 0),
                        f"abstained_{name}": blocks.get("abstained", row["reason"])})
        rows.append(row)
    details = pd.DataFrame(rows)
    return details[["filename", "label"]], details
