"""Calibrate a model's video scores for log-loss on predictions it made without seeing the videos,
and store it in checkpoints.

    python -m kernels.calibrate --crossval runs/lite0 --config lite0 [--checkpoint last] \
        [--strategy confident] [--into weights/lite0.pt ...]
    python -m kernels.calibrate --details runs/lrnet/submission_details.csv --root ../shared \
        --labels weights/lrnet_ffpp_calibration.csv --model lrnet_ffpp [--into weights/lrnet_ffpp.pt]

``--crossval``: reads ``crops.csv`` of a ``python -m training.crossval`` run: every video scored by the
fold run that never saw its identity; each video's score is made by the kernel's frame -> video rule
(``--strategy``; for a sequence config, whose rows are blocks, ``logitmean`` is the kernel's rule).
``--details``: reads the video scores ``score_<model>`` of a ``kernels.predict``
run over ``--root`` with an uncalibrated checkpoint (a published model: LRNet's pairs), for the videos
``--labels`` lists (``path,label[,original][,group]`` relative to ``--root``, as ``preprocessing.index``
reads it), folded by identity group; videos the model abstained on are left out.

Then a temperature, and a bias where it pays, is fitted (real and fake videos weighing half each).
How much it helps is measured honestly, by cross-fitting: each fold's videos are calibrated by a fit
on the other folds' videos; the kind of fit that does best there is the one stored (none, where
neither beats the raw scores). The fit on all videos is written into every ``--into`` checkpoint
(its ``calibration`` entry), which the kernel then applies before the ensemble mean and the
clipping; ``calibration_<config or model>.json`` beside the input records the numbers.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from models import calibration
from models.checkpoint import CheckpointError, amend_checkpoint, read_checkpoint
from models.metrics import label_metrics
from plumbing.fileio import write_json
from plumbing.logs import configure_logging
from preprocessing.folds import assign_folds
from preprocessing.index import index_folder, video_id

from .aggregate import STRATEGIES, aggregate

log = logging.getLogger("kernels.calibrate")


class CalibrationError(ValueError):
    """The cross-validation output cannot be calibrated (missing file, config or folds)."""


def video_scores(crops: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """One row per video of ``crops`` (``fold``, ``video``, ``frame``, ``track``, ``label``, ``prob``):
    ``fold``, ``video``, ``label`` and ``prob`` by the kernel's rule ``strategy``."""
    rows = [{"fold": fold, "video": video, "label": int(part.label.iloc[0]),
             "prob": aggregate(part.prob.to_numpy(), part.track.to_numpy(), strategy)}
            for (fold, video), part in crops.groupby(["fold", "video"], sort=True)]
    return pd.DataFrame(rows)


def cross_fitted(videos: pd.DataFrame, bias: bool) -> np.ndarray:
    """Each video's score calibrated by a fit on the other folds' videos."""
    out = np.empty(len(videos))
    for fold in videos.fold.unique():
        held = (videos.fold == fold).to_numpy()
        fitted = calibration.fit(videos.label[~held], videos.prob[~held], bias=bias)
        out[held] = fitted(videos.prob[held].to_numpy())
    return out


def _metrics(labels, probs) -> dict[str, float]:
    """Log-loss both ways (the mean of the real and the fake videos' log-losses; plain, over videos) and
    AUC, of probabilities kept 1e-6 from 0 and 1."""
    probs = np.clip(probs, 1e-6, 1 - 1e-6)
    metrics = label_metrics(labels, probs)
    plain = -np.mean(np.where(np.asarray(labels) == 1, np.log(probs), np.log1p(-np.asarray(probs))))
    return {"logloss_balanced": metrics["logloss"], "logloss_plain": float(plain), "auc": metrics["auc"]}


def calibrate(crossval_dir: Path, config: str, checkpoint: str = "last",
              strategy: str = "confident") -> tuple[calibration.Calibration, dict]:
    """The calibration fitted on all out-of-fold videos of ``config``'s ``checkpoint``, and the report:
    cross-fitted metrics of the raw scores, with a temperature, and with a temperature and a bias. The
    fit is of the kind whose cross-fitted log-loss is lowest: the identity where calibrating does not pay."""
    path = crossval_dir / "crops.csv"
    if not path.is_file():
        raise CalibrationError(f"{path}: missing (run python -m training.crossval first)")
    crops = pd.read_csv(path, dtype={"video": str})
    selected = crops[(crops.config == config) & (crops.checkpoint == checkpoint)]
    if selected.empty:
        pairs = sorted(set(zip(crops.config, crops.checkpoint)))
        raise CalibrationError(f"{path}: no crops of config {config!r}, checkpoint {checkpoint!r}; it holds {pairs}")
    videos = video_scores(selected, strategy)
    if videos.fold.nunique() < 2:
        raise CalibrationError(f"{path}: config {config!r} was scored on one fold; cross-fitting needs two or more")
    fitted, report = fit_videos(videos, strategy)
    return fitted, {"config": config, "checkpoint": checkpoint, **report}


def details_videos(details_csv: Path, root: Path, labels_csv: Path, model: str, folds: int = 5) -> pd.DataFrame:
    """``fold``, ``video``, ``label``, ``prob`` of every video of ``labels_csv`` (under ``root``) that
    the kernel's detail file scored with ``model``: folds by identity group, classes balanced."""
    if not details_csv.is_file():
        raise CalibrationError(f"{details_csv}: missing (run python -m kernels.predict first)")
    details = pd.read_csv(details_csv, dtype={"filename": str})
    column = f"score_{model}"
    if column not in details.columns:
        raise CalibrationError(f"{details_csv}: no column {column!r}; its models are "
                               f"{sorted(c[6:] for c in details.columns if c.startswith('score_'))}")
    try:
        index = index_folder(root, labels_csv).videos
    except (FileNotFoundError, ValueError) as err:
        raise CalibrationError(str(err)) from err
    index["fold"] = assign_folds(index["group"], index["label"], folds)
    scores = dict(zip((video_id(root / name, root) for name in details["filename"]), details[column]))
    index["prob"] = index["video"].map(scores)
    return index[index["prob"].notna()][["fold", "video", "label", "prob"]].reset_index(drop=True)


def fit_videos(videos: pd.DataFrame, strategy: str | None) -> tuple[calibration.Calibration, dict]:
    """The calibration of ``videos`` (``fold``, ``video``, ``label``, ``prob``: raw video scores made
    by ``strategy``) and its report, as :func:`calibrate` describes."""
    videos = videos.copy()
    videos["temperature"] = cross_fitted(videos, bias=False)
    videos["temperature_bias"] = cross_fitted(videos, bias=True)
    rows = {name: _metrics(videos.label, videos[column])
            for name, column in (("raw", "prob"), ("temperature", "temperature"), ("temperature_bias", "temperature_bias"))}
    chosen = min(rows, key=lambda name: rows[name]["logloss_balanced"])  # what pays on videos the fit never saw
    fitted = calibration.Calibration(strategy=strategy) if chosen == "raw" else \
        calibration.fit(videos.label, videos.prob, bias=chosen == "temperature_bias", strategy=strategy)
    per_fold = {str(fold): {name: _metrics(part.label, part[column])["logloss_balanced"]
                            for name, column in (("raw", "prob"), ("calibrated", "prob" if chosen == "raw" else chosen))}
                for fold, part in videos.groupby("fold")}
    report = {"strategy": strategy, "videos": len(videos), "cross_fitted": rows, "per_fold_balanced_logloss": per_fold,
              "chosen": chosen, "calibration": fitted.to_dict()}
    return fitted, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kernels.calibrate", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--crossval", type=Path, help="output folder of python -m training.crossval")
    source.add_argument("--details", type=Path, help="the detail file of a python -m kernels.predict run")
    parser.add_argument("--config", help="with --crossval: the config's name in it (its file name without .json)")
    parser.add_argument("--root", type=Path, help="with --details: the folder that run scored (its --videos)")
    parser.add_argument("--labels", type=Path, help="with --details: the videos to fit on, relative to --root "
                        "(path,label[,original][,group])")
    parser.add_argument("--model", help="with --details: the model's name in it (its checkpoint's file stem)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="last",
                        help="which checkpoint of each fold run (default: %(default)s, chosen by nobody)")
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="confident",
                        help="the kernel's frame -> video rule to calibrate (default: %(default)s)")
    parser.add_argument("--into", type=Path, nargs="+", default=[],
                        help="checkpoints to store the calibration in (trained with the same config)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    needed = ("config",) if args.crossval else ("root", "labels", "model")
    absent = [f"--{name}" for name in needed if getattr(args, name) is None]
    if absent:
        parser.error(f"{'--crossval' if args.crossval else '--details'} needs {' and '.join(absent)}")
    configure_logging(args.verbose)
    try:
        for path in args.into:  # refuse a bad checkpoint before any work
            payload = read_checkpoint(path)
            if args.details and calibration.Calibration.from_dict(payload.get("calibration")) != calibration.Calibration():
                raise CalibrationError(f"{path}: already calibrated; fit on the scores of an uncalibrated copy")
        if args.crossval:
            fitted, report = calibrate(args.crossval, args.config, args.checkpoint, args.strategy)
            name, out = args.config, args.crossval
        else:
            fitted, report = fit_videos(details_videos(args.details, args.root, args.labels, args.model), "logitmean")
            report = {"model": args.model, **report}
            name, out = args.model, args.details.parent
        for path in args.into:
            amend_checkpoint(path, calibration=fitted.to_dict())
    except (CalibrationError, CheckpointError) as err:
        log.error("%s", err)
        return 2
    write_json(out / f"calibration_{name}.json", report)
    table = pd.DataFrame(report["cross_fitted"]).T
    log.info("%s (%s rule), %d videos, cross-fitted over folds:\n%s", name, report["strategy"],
             report["videos"], table.to_string(float_format="%.4f"))
    log.info("fitted on all videos: temperature %.3f, bias %.3f%s", fitted.temperature, fitted.bias,
             f"; stored in {', '.join(map(str, args.into))}" if args.into else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
