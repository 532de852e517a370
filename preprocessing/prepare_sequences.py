"""Landmark sequences for every video of a prepared folder: a sequence model's training data.

    python -m preprocessing.prepare_sequences --prepared DIR --out DIR [--runs 8] [--spec FILE]

Each video of ``--prepared``'s ``videos.csv`` (``python -m preprocessing.prepare``) is read as the
kernel reads it for a sequence model: ``--runs`` runs of 30 consecutive frames spread over the video
(:func:`preprocessing.video.read_frames`), MTCNN at the kernel's thresholds, each face followed
through each run made into one landmark sequence as the landmark spec says
(:func:`preprocessing.sequences.run_sequences`, the kernel's own code). So a checkpoint trained on
them sees in the kernel what it saw in training.

Writes into ``--out``:

- ``sequences/<video id>.npz``: ``landmarks`` (n, 30, 136) float32 (the spec's normalised
  coordinates), ``run`` (n,) the run's number, ``track`` (n,) the face's track in that run (0 the
  longest), ``frames`` (n, 30) stream indices; n = 0 where no face was followed through a whole run;
- ``sequences.csv``: one row per sequence: video, run, track, start (its first frame), frames (its
  length), label, fold, group (the last three from ``videos.csv``);
- ``config.json`` (the settings, ``spec`` the landmark spec in full) and ``summary.json`` (counts, failures).

Resumable: a video's npz is written atomically and last, so a killed run goes on where it stopped.
A video that cannot be read is logged on one line (file and cause), recorded in ``summary.json``
and retried next run. An ``--out`` made with other settings is refused (unless ``--overwrite``).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from plumbing.cli import add_field_flag, exit_on_sigterm
from plumbing.fileio import atomic_write, changed_settings, write_json
from plumbing.logs import configure_logging

from .detect import FaceDetector
from .image import read_input
from .landmarks import LandmarkSpec, LandmarkSpecError
from .prepared import PreparedDataError, read_table
from .sequences import run_sequences
from .video import RUN_LENGTH, VideoReadError

log = logging.getLogger("prepare_sequences")

#: The table's columns, one row per sequence.
COLUMNS = ("video", "run", "track", "start", "frames", "label", "fold", "group")


@dataclass
class SequencePrepareConfig:
    """``prepared``: a ``preprocessing.prepare`` folder; ``out``: where to write; ``runs``: runs of
    :data:`RUN_LENGTH` frames per video (fewer in a video too short for them); ``spec``: the
    landmark spec as a dict (None: the defaults, the published LRNet pairs' input)."""

    prepared: str
    out: str
    runs: int = 8
    spec: dict | None = None
    overwrite: bool = False


def sequence_path(out: Path, video: str) -> Path:
    """Where ``video``'s sequences are stored."""
    return out / "sequences" / f"{video}.npz"


def video_sequences(path: str, runs: int, detector: FaceDetector, spec: LandmarkSpec) -> dict[str, np.ndarray]:
    """The arrays of one video's npz (see the module doc), as the kernel makes its sequences."""
    frames = read_input(path, 1, runs=runs)
    found = run_sequences(frames, detector, {spec: spec.build_detector()})[spec]
    return {"landmarks": np.stack([s.landmarks for s in found]) if found else np.zeros((0, RUN_LENGTH, 136), np.float32),
            "run": np.array([s.run for s in found], np.int64), "track": np.array([s.track for s in found], np.int64),
            "frames": np.stack([s.frames for s in found]) if found else np.zeros((0, RUN_LENGTH), np.int64)}


def read_sequences(out: str | Path, video: str) -> dict[str, np.ndarray]:
    """The arrays :func:`video_sequences` stored for ``video`` under ``out``."""
    with np.load(sequence_path(Path(out), video)) as stored:
        return {key: stored[key] for key in stored.files}


def _check_config(config: SequencePrepareConfig, out: Path) -> None:
    settings = asdict(config)
    keys = [key for key in settings if key not in ("out", "overwrite")]
    changed = [] if config.overwrite else changed_settings(out / "config.json", settings, keys)
    if changed:
        raise ValueError(f"{out} was made with {', '.join(changed)}: use another --out, the same settings, or --overwrite")


def prepare_sequences(config: SequencePrepareConfig) -> dict:
    """Make the sequences of every video of ``config.prepared`` not done yet, then the table; returns the summary."""
    out = Path(config.out)
    spec = LandmarkSpec.from_dict(config.spec or {})
    config.spec = spec.to_dict()
    _check_config(config, out)
    videos = read_table(Path(config.prepared) / "videos.csv", ("video", "path", "label", "fold", "group"))
    write_json(out / "config.json", asdict(config))
    todo = [row for row in videos.itertuples() if config.overwrite or not sequence_path(out, row.video).is_file()]
    log.info("%d videos, %d already done", len(videos), len(videos) - len(todo))
    detector, failures, start = FaceDetector(), {}, time.perf_counter()
    with logging_redirect_tqdm():
        for row in tqdm(todo, desc="sequences", unit="video"):
            try:
                arrays = video_sequences(row.path, config.runs, detector, spec)
            except VideoReadError as err:
                log.warning("%s: %s", row.path, err.cause)
                failures[row.video] = err.cause
                continue
            with atomic_write(sequence_path(out, row.video), "wb") as f:
                np.savez(f, **arrays)
    seconds = time.perf_counter() - start
    rows = []
    for row in videos.itertuples():
        if sequence_path(out, row.video).is_file():
            stored = read_sequences(out, row.video)
            rows += [(row.video, run, track, frames[0], len(frames), row.label, row.fold, row.group)
                     for run, track, frames in zip(stored["run"], stored["track"], stored["frames"])]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    with atomic_write(out / "sequences.csv", "w", newline="", encoding="utf-8") as f:
        table.to_csv(f, index=False)
    summary = {"videos": len(videos), "made": len(todo) - len(failures), "seconds": round(seconds, 1),
               "with_sequences": int(table.video.nunique()), "sequences": len(table), "failures": failures}
    summary["line"] = (f"{summary['videos']} videos: {summary['made']} made ({seconds / max(len(todo), 1):.1f} s each), "
                       f"{len(failures)} unreadable; {summary['sequences']} sequences from {summary['with_sequences']} videos")
    write_json(out / "summary.json", summary)
    return summary


def read_sequence_table(out: str | Path) -> pd.DataFrame:
    """``sequences.csv`` of ``out``, typed (``video`` and ``group`` str, the rest int)."""
    table = read_table(Path(out) / "sequences.csv", COLUMNS)
    return table.astype({column: int for column in ("run", "track", "start", "frames", "label", "fold")})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m preprocessing.prepare_sequences", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = SequencePrepareConfig("", "")
    parser.add_argument("--prepared", required=True, type=Path, help="folder written by python -m preprocessing.prepare")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    add_field_flag(parser, defaults, "runs", f"runs of {RUN_LENGTH} consecutive frames per video")
    parser.add_argument("--spec", type=Path, help="JSON file of a landmark spec (default: the published LRNet pairs' input)")
    parser.add_argument("--overwrite", action="store_true", help="redo every video, even with other settings")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        spec = json.loads(args.spec.read_text()) if args.spec else None
        config = SequencePrepareConfig(str(args.prepared), str(args.out), args.runs, spec, args.overwrite)
        with exit_on_sigterm():
            summary = prepare_sequences(config)
    except (ValueError, OSError, PreparedDataError, LandmarkSpecError) as err:
        log.error("%s", err)
        return 2
    log.info("%s; output in %s", summary["line"], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
