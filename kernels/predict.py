"""Score a folder of videos into a Kaggle DFDC submission, under a deadline.

    python -m kernels.predict --videos DIR --out submission/submission.csv [--weights W.pt ...]
                              [--frames 32] [--deadline SECONDS] [--strategy confident]

Writes ``filename,label`` for every video (sorted, probabilities clipped to [eps, 1 - eps]) and a
per-video detail file beside it. The submission is rewritten atomically as videos finish, so a
complete, valid file exists from the first second; videos not reached by the deadline, unreadable
or without faces get the prior. A killed run restarted with the same arguments resumes.
"""
from __future__ import annotations

import argparse
import functools
import logging
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from models.checkpoint import CheckpointError, checkpoint_family
from preprocessing.cli import add_field_flag, exit_on_sigterm
from preprocessing.cluster import add_engine_arguments
from preprocessing.detect import add_detector_arguments, detector_settings
from preprocessing.fileio import atomic_write
from preprocessing.logs import configure_logging
from preprocessing.sample import resolve_videos
from preprocessing.video import FRAMES, RUN_LENGTH, RUNS
from submission.io import COLUMNS, write_submission

from .aggregate import STRATEGIES, aggregate, logitmean
from .budget import Budget
from .ensemble import PRECISIONS, Ensemble
from .kaggle import default_submission
from .pipeline import Cutting, VideoFaces, Workers, default_workers, iterate_faces
from .presets import PRESETS, Preset
from .progress import ProgressLog

log = logging.getLogger("kernels.predict")

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclass
class Settings:
    """Everything that decides a run's predictions besides the videos and the checkpoints."""

    frames: int = FRAMES
    min_frames: int = 8
    strategy: str | None = None  # None: each model's own rule (its crop spec's aggregate)
    prior: float = 0.5
    eps: float = 0.01
    detect_every: int = 1
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
                     if k in ("thresholds", "min_score", "min_size", "scale", "resample")}
        return {"weights": ensemble.digests, "frames": self.frames, "min_frames": self.min_frames,
                "specs": [m.spec.to_dict() for m in ensemble.models], **self._cutting_fields(),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in detection.items()}}

    def strategy_of(self, model) -> str:
        """The frame -> video rule for ``model``: the one asked for, else the model's own."""
        return self.strategy or model.spec.aggregate

    def cutting(self, ensemble: Ensemble) -> Cutting:
        return Cutting(ensemble.crop_specs, landmarks=ensemble.landmark_specs, **self._cutting_fields())

    def _cutting_fields(self) -> dict:
        """How faces are found and cut: these settings of :class:`Cutting`'s fields (all but its
        specs, which the models give)."""
        return {f.name: getattr(self, f.name) for f in fields(Cutting) if f.name not in ("specs", "landmarks")}


def default_weights() -> list[Path]:
    """The frame-model checkpoints shipped in ``weights/`` (``*.pt``), sorted; a sequence model
    (``lrnet_*.pt``) runs only where ``--weights`` names it. Raises ``CheckpointError`` for an unreadable file."""
    return sorted(path for path in WEIGHTS_DIR.glob("*.pt") if checkpoint_family(path) == "frame")


def shard(videos: list[tuple[str, Path]], spec: str | None) -> list[tuple[str, Path]]:
    """Keep shard ``i`` of ``n`` (``"i/n"``, 0-based): every n-th video of the sorted list from i."""
    if not spec:
        return videos
    try:
        i, n = (int(v) for v in spec.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise ValueError(f"--shard must be i/n with 0 <= i < n, got {spec!r}") from None
    return videos[i::n]


def score_faces(faces: VideoFaces, ensemble: Ensemble, seconds: float) -> dict:
    """One video's progress record: per frame model its faces' probabilities, per sequence model its
    blocks' (``blocks``: ``probs``, the ``sequences`` they come from, and why it abstained:
    ``abstained``), or the reason for the prior."""
    record = {"filename": faces.filename, "status": "ok", "reason": "", "frames_requested": faces.frames_requested,
              "frames_read": faces.frames_read, "faces": len(faces.crops), "tracks": len(set(faces.track_ids)),
              "frame_ids": faces.frame_ids, "track_ids": faces.track_ids, "probs": {}, "blocks": {}}
    if faces.error:
        record.update(status="prior", reason=faces.error)
    else:
        try:
            record["probs"] = {k: v.tolist() for k, v in ensemble.predict(faces.cuts).items()}
            sequences = {spec: [s.landmarks for s in found] for spec, found in faces.sequences.items()}
            for name, probs in ensemble.predict_blocks(sequences).items():
                model = ensemble.models[ensemble.names.index(name)]
                reason = "" if len(probs) else faces.no_sequence or f"no sequence as long as its block ({model.config.block} frames)"
                record["blocks"][name] = {"probs": probs.tolist(), "sequences": len(sequences.get(model.spec, [])),
                                          "abstained": reason}
        except Exception as err:  # a model failing on one video must not end the run
            record.update(status="prior", reason=f"model failed: {type(err).__name__}: {err}")
        if record["status"] == "ok" and not ensemble.frame_models and all(b["abstained"] for b in record["blocks"].values()):
            record.update(status="prior", reason="; ".join(sorted({b["abstained"] for b in record["blocks"].values()})))
    record["seconds"] = round(seconds, 3)
    return record


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
    for faces in iterate_faces(videos, plan, budget.remaining, settings.detector, settings.cutting(ensemble),
                               settings.workers if workers is None else workers,
                               video_timeout=settings.video_timeout):
        yield faces, score_faces(faces, ensemble, time.monotonic() - last)
        last = time.monotonic()


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
    for name, model, _ in ensemble.frame_models:
        fitted_on = model.calibration.strategy
        if fitted_on and fitted_on != settings.strategy_of(model):
            log.warning("%s: calibrated on %r video scores, applied to %r ones", name, fitted_on,
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
    submission, details = tables(videos, progress.records, ensemble, settings, unreached)
    write_submission(out, submission)
    write_csv(details_path(out), details)
    missed = int((details["reason"] == unreached).sum())
    if missed:
        log.warning("%d video(s) not reached before the deadline got the prior", missed)
    return details


def named_videos(given: Sequence[Path] | None, sample_dir: Path) -> list[tuple[str, Path]]:
    """``(filename, path)`` for every video of ``given`` (folders searched recursively; none: the
    Kaggle test folder or the embedded sample rendered into ``sample_dir``), named by the path
    relative to the folder given, or the bare file name."""
    listed, root = resolve_videos(given, sample_dir)
    return [((p.relative_to(root) if root else Path(p.name)).as_posix(), p) for p in listed]


def predict_folder(videos: str | Path | Sequence[str | Path], weights: Sequence[str | Path] | None = None,
                   out: str | Path | None = None, device: str | None = None, precision: str = "auto",
                   model_weights: Sequence[float] | None = None, fresh: bool = False, spec: dict | None = None,
                   **settings) -> pd.DataFrame:
    """Notebook entry point: score a folder (or a list of files) and return the per-video details.

    ``spec``: crop spec fields replacing every checkpoint's own (``{"margin": 0.25}``); ``settings``
    are :class:`Settings` fields (``frames``, ``strategy``, ``deadline``, ``workers``...); ``out``
    defaults to :func:`~kernels.kaggle.default_submission`.
    """
    out = Path(out) if out is not None else default_submission()
    given = [Path(videos)] if isinstance(videos, (str, Path)) else [Path(v) for v in videos]
    named = named_videos(given, out.parent / "sample_videos")
    ensemble = Ensemble.load(weights or default_weights(), model_weights, device, precision, spec=spec)
    return run(named, ensemble, out, Settings(**settings), fresh)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kernels.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Settings()
    p.add_argument("--videos", type=Path, nargs="*",
                   help="a folder (searched recursively) or video files; default: the Kaggle test folder "
                        "if present, else the embedded astronaut sample")
    p.add_argument("--out", type=Path, default=default_submission(),
                   help="submission CSV (default: submission.csv inside Kaggle, else submission/submission.csv)")
    p.add_argument("--weights", type=Path, nargs="+", help="checkpoints (default: every frame model in weights/)")
    p.add_argument("--model-weights", type=float, nargs="+", help="one weight per checkpoint for the ensemble mean")
    add_field_flag(p, default, "frames", "frames per video while time allows")
    add_field_flag(p, default, "min_frames", "fewest frames when short of time")
    add_field_flag(p, default, "runs", f"runs of {RUN_LENGTH} consecutive frames per video for sequence models "
                   "(read only when one is given)")
    add_field_flag(p, default, "detect_every", "run MTCNN on every k-th frame and interpolate the boxes between")
    p.add_argument("--deadline", type=float, help="seconds for the whole folder, from start to written CSV")
    add_field_flag(p, default, "strategy", "frame -> video aggregation; None: each checkpoint's own, from its crop spec",
                   choices=sorted(STRATEGIES))
    p.add_argument("--margin", type=float,
                   help="crop margin per side, a fraction of the box (default: each checkpoint's own)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a published solution's inference recipe (frames, detection, faces kept); "
                        "flags given explicitly still win")
    add_field_flag(p, default, "prior", "label for videos that cannot be scored")
    add_field_flag(p, default, "eps", "clip labels to [eps, 1 - eps]")
    p.add_argument("--shard", help="i/n: score only shard i of n (0-based); join shards with submission.merge")
    add_field_flag(p, default, "workers", "decode+detect processes beside the models, started while the models load "
                   "(0: all in one process; by default 1 with 2+ CPUs or a GPU, else 0)")
    add_engine_arguments(p, default)
    add_field_flag(p, default, "video_timeout", "give up on a video after this many seconds")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: fp16 on CUDA; on a CPU, bf16 + channels_last for each model that a probe "
                        "at start shows faster and within 1e-2 of fp32, else fp32")
    p.add_argument("--fresh", action="store_true", help="ignore the progress of an earlier run")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_detector_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    parser = build_parser()
    preset = PRESETS.get(parser.parse_known_args(argv)[0].preset) or Preset()
    parser.set_defaults(**preset.flags)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    detector = {**detector_settings(args), **preset.detector}
    local = args.workers if args.engine == "local" else 0  # on Ray, detection runs in Ray's tasks
    with exit_on_sigterm(), Workers(detector, local) as workers:  # they start while the models load
        return score_folder(args, detector, preset, workers, started)


def score_folder(args: argparse.Namespace, detector: dict, preset: Preset, workers: Workers, started: float) -> int:
    """The command's work once its detection workers are starting; returns the exit status."""
    try:
        weights = args.weights or default_weights()
        if not weights:
            log.error("no checkpoint in %s: pass --weights (see README: Train)", WEIGHTS_DIR)
            return 2
        ensemble = Ensemble.load(weights, args.model_weights, args.device, args.precision,
                                 spec={"margin": args.margin})
    except (CheckpointError, ValueError) as err:
        log.error("%s", err)
        return 2
    try:
        named = shard(named_videos(args.videos, args.out.parent / "sample_videos"), args.shard)
    except ValueError as err:
        log.error("%s", err)
        return 2
    settings = Settings(frames=args.frames, min_frames=args.min_frames, detect_every=args.detect_every,
                        strategy=args.strategy, prior=args.prior,
                        eps=args.eps, deadline=args.deadline, workers=args.workers,
                        video_timeout=args.video_timeout, detector=detector, runs=args.runs,
                        engine=args.engine, address=args.address, **preset.settings)
    log.info("%d videos, model(s) %s in %s, strategy %s", len(named), ensemble.names,
             ensemble.precisions, settings.strategy or "each model's own")
    try:
        details = run(named, ensemble, args.out, settings, args.fresh, started, workers=workers)
    except OSError as err:  # a read-only folder, a full disk: earlier outputs stay as they were
        log.error("cannot write the outputs beside %s: %s", args.out, err)
        return 3
    log.info("wrote %s (%d rows) and %s: %d scored, %d got the prior", args.out, len(details),
             details_path(args.out), int((details["status"] == "ok").sum()), int((details["status"] != "ok").sum()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
