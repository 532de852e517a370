"""Calibrate a model's video scores for log-loss on predictions it made without seeing the videos,
and store it in checkpoints; or fit a stacked ensemble of several models the same way.

    python -m kernels.calibrate --crossval runs/lite0 --config lite0 [--checkpoint last] \
        [--strategy confident] [--into weights/lite0.pt ...]
    python -m kernels.calibrate --details runs/lrnet/submission_details.csv --root ../shared \
        --labels weights/lrnet_ffpp_calibration.csv --model lrnet_ffpp [--into weights/lrnet_ffpp.pt]
    python -m kernels.calibrate --stack weights/stacking.json --member runs/lite0 lite0 weights/lite0.pt \
        --member runs/lrnet/submission_details.csv lrnet_ffpp weights/lrnet_ffpp.pt \
        --root ../shared --labels weights/training_videos.csv

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

``--stack OUT``: each ``--member SOURCE NAME CHECKPOINT`` gives one model's out-of-fold video scores
(``SOURCE`` a ``training.crossval`` folder and ``NAME`` its config, or a detail file and ``NAME`` its
model, as above) and the checkpoint the kernel will load for it: the scores are taken as the kernel
writes them, ``score_<model>`` (a detail file's as they are, abstentions included; a crossval
folder's made by ``--strategy`` and calibrated by the checkpoint's own calibration). The members are
joined on the video (only videos every member scored or abstained on; a video whose fold or label
differs between members is refused). A logistic regression (:mod:`models.stacking`; real and fake
videos weighing half each, mild L2) is cross-fitted by fold and reported beside each member alone
(cross-fitted calibration, the prior where it abstained) and the plain mean of the calibrated
members (the rule without a stacking file); the fit on all videos is written to ``OUT``, its report inside.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from models import calibration
from models.checkpoint import CheckpointError, amend_checkpoint, payload_family, read_checkpoint
from models.metrics import RESAMPLES, by_source, intervals, label_metrics, paired_intervals
from models.stacking import Member, Stacking, StackingError, features
from plumbing.fileio import file_digest, write_json
from plumbing.logs import configure_logging
from preprocessing.folds import assign_folds
from preprocessing.index import index_folder, video_id

from .aggregate import STRATEGIES, aggregate
from .scoring import Settings

log = logging.getLogger("kernels.calibrate")

#: The stacked regression's inverse L2 strength (scikit-learn's ``C``): mild, on logits of order 1-10.
STACK_C = 1.0
#: A member alone gives an abstained video this: the kernel's prior for a video no model scored.
PRIOR = Settings.prior


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
    videos = crossval_videos(crossval_dir, config, checkpoint, strategy)
    fitted, report = fit_videos(videos, strategy)
    return fitted, {"config": config, "checkpoint": checkpoint, **report}


def crossval_videos(crossval_dir: Path, config: str, checkpoint: str = "last", strategy: str = "confident") -> pd.DataFrame:
    """``fold``, ``video``, ``label``, ``prob`` of every out-of-fold video of ``config``'s ``checkpoint``
    in a ``training.crossval`` output folder, its score by the kernel's rule ``strategy``; two folds or more."""
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
    return videos


def details_videos(details_csv: Path, root: Path, labels_csv: Path, model: str, folds: int = 5,
                   abstained: bool = False) -> pd.DataFrame:
    """``fold``, ``video``, ``label``, ``prob`` of every video of ``labels_csv`` (under ``root``) that
    the kernel's detail file scored with ``model``: folds by identity group, classes balanced, as
    ``preprocessing.prepare`` deals them for the same list. ``abstained``: also the videos on which the
    model abstained, with ``prob`` NaN: those the run scored (status ``ok``) with other models, and
    those it gave the prior because every model there abstained (``abstained_<model>`` gives the model's
    reason: in an ensemble with a frame model, they would be that model's alone)."""
    if not details_csv.is_file():
        raise CalibrationError(f"{details_csv}: missing (run python -m kernels.predict first)")
    details = pd.read_csv(details_csv, dtype={"filename": str})
    column = f"score_{model}"
    if column not in details.columns:
        raise CalibrationError(f"{details_csv}: no column {column!r}; its models are "
                               f"{sorted(c[6:] for c in details.columns if c.startswith('score_'))}")
    index = listed_videos(root, labels_csv, folds)
    if abstained and "status" not in details.columns:
        raise CalibrationError(f"{details_csv}: no column 'status' (not a detail file of python -m kernels.predict)")
    ids = [video_id(root / name, root) for name in details["filename"]]
    index["prob"] = index["video"].map(dict(zip(ids, details[column])))
    reason = details.get(f"abstained_{model}", pd.Series("", index=details.index)).fillna("")
    seen = (details["status"] == "ok") | (reason != "") if abstained else details[column].notna()
    kept = index["video"].isin(set(np.array(ids)[seen.to_numpy()]))
    return index[kept][["fold", "video", "label", "prob"]].reset_index(drop=True)


def listed_videos(root: Path, labels_csv: Path, folds: int = 5) -> pd.DataFrame:
    """The videos ``labels_csv`` lists under ``root`` (``preprocessing.index``'s table) with the identity
    folds ``preprocessing.prepare`` deals them (``fold``)."""
    try:
        index = index_folder(root, labels_csv).videos
    except (FileNotFoundError, ValueError) as err:
        raise CalibrationError(str(err)) from err
    return index.assign(fold=assign_folds(index["group"], index["label"], folds))


def out_of_fold(videos: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict], str]:
    """``videos`` (``fold``, ``label``, ``prob``) with ``temperature`` and ``temperature_bias``, each
    video calibrated by a fit on the other folds; the metrics of ``raw``, ``temperature`` and
    ``temperature_bias``; and which of them pays on videos the fit never saw (lowest balanced log-loss)."""
    videos = videos.copy()
    videos["temperature"] = cross_fitted(videos, bias=False)
    videos["temperature_bias"] = cross_fitted(videos, bias=True)
    rows = {name: _metrics(videos.label, videos[column])
            for name, column in (("raw", "prob"), ("temperature", "temperature"), ("temperature_bias", "temperature_bias"))}
    return videos, rows, min(rows, key=lambda name: rows[name]["logloss_balanced"])


def fit_videos(videos: pd.DataFrame, strategy: str | None) -> tuple[calibration.Calibration, dict]:
    """The calibration of ``videos`` (``fold``, ``video``, ``label``, ``prob``: raw video scores made
    by ``strategy``) and its report, as :func:`calibrate` describes."""
    videos, rows, chosen = out_of_fold(videos)
    fitted = calibration.Calibration(strategy=strategy) if chosen == "raw" else \
        calibration.fit(videos.label, videos.prob, bias=chosen == "temperature_bias", strategy=strategy)
    per_fold = {str(fold): {name: _metrics(part.label, part[column])["logloss_balanced"]
                            for name, column in (("raw", "prob"), ("calibrated", "prob" if chosen == "raw" else chosen))}
                for fold, part in videos.groupby("fold")}
    report = {"strategy": strategy, "videos": len(videos), "cross_fitted": rows, "per_fold_balanced_logloss": per_fold,
              "chosen": chosen, "calibration": fitted.to_dict()}
    return fitted, report


def member_scores(source: Path, name: str, checkpoint: Path, root: Path | None, labels: Path | None,
                  which: str = "last", strategy: str = "confident") -> tuple[pd.DataFrame, str | None]:
    """One stack member's ``fold``, ``video``, ``label``, ``prob`` (NaN: abstained) as the kernel
    writes ``score_<model>`` with ``checkpoint``, from a crossval folder or a detail file (see the
    module doc), and the frame -> video rule they were made by (None: the kernel's own for the model).
    A sequence model's crossval scores are its blocks' mean logit, and the videos ``labels`` lists
    without a landmark sequence its abstentions."""
    payload = read_checkpoint(checkpoint)
    sequence = payload_family(payload) == "sequence"
    if (sequence or not source.is_dir()) and (root is None or labels is None):
        raise CalibrationError(f"{source}: a {'sequence model' if sequence else 'detail file'} needs --root and "
                               "--labels (the list prepare was given), to know the videos it abstained on")
    if not source.is_dir():
        return details_videos(source, root, labels, name, abstained=True), None
    videos = crossval_videos(source, name, which, "logitmean" if sequence else strategy)
    videos["prob"] = calibration.Calibration.from_dict(payload.get("calibration"))(videos["prob"].to_numpy())
    if not sequence:
        return videos, strategy
    # a listed video without a landmark sequence is one the sequence model abstains on, as in the kernel
    listed = listed_videos(root, labels)[["video", "fold", "label"]]
    joined = listed.merge(videos, on="video", how="left", suffixes=("", "_scored"))
    differs = joined["fold_scored"].notna() & (joined["fold_scored"] != joined["fold"])
    if differs.any():
        raise CalibrationError(f"{source}: video {joined.video[differs].iloc[0]}: its fold differs from the one "
                               f"{labels} deals it; the folds must come from one video list")
    return joined[["fold", "video", "label", "prob"]], None


def join_members(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``fold``, ``video``, ``label`` and a ``prob`` column per member name of every video all members
    have; a video whose fold or label differs between members is a :class:`CalibrationError` naming it."""
    joined = None
    for name, table in tables.items():
        part = table.set_index("video")[["fold", "label", "prob"]].add_suffix(f"@{name}")
        joined = part if joined is None else joined.join(part, how="inner")
    for key in ("fold", "label"):
        values = joined[[f"{key}@{name}" for name in tables]]
        differs = values.nunique(axis=1) > 1
        if differs.any():
            video = differs.idxmax()
            raise CalibrationError(f"video {video}: its {key} differs between members "
                                   f"({dict(zip(tables, values.loc[video].tolist()))}); the folds must come "
                                   "from one video list (--labels: the one prepare was given)")
    first = next(iter(tables))
    out = pd.DataFrame({"fold": joined[f"fold@{first}"], "label": joined[f"label@{first}"]})
    out = out.assign(**{name: joined[f"prob@{name}"] for name in tables})
    left = sorted(set().union(*(t["video"] for t in tables.values())) - set(out.index))
    if left:
        log.warning("%d video(s) not scored by every member are left out (e.g. %s)", len(left), ", ".join(left[:3]))
    return out.reset_index().sort_values("video", kind="stable").reset_index(drop=True)


def fit_stack(table: pd.DataFrame, members: list[dict]) -> Stacking:
    """The logistic regression of ``table``'s labels on the members' scores (a column per member's
    ``name``; NaN: abstained), real and fake videos weighing half each; ``members``: each member's
    entries of the file besides its coefficients."""
    names = [m["name"] for m in members]
    regression = LogisticRegression(C=STACK_C, class_weight="balanced", max_iter=1000)
    regression.fit(features(table[names].to_numpy()), table["label"].to_numpy())
    coefficients = regression.coef_[0]
    return Stacking(tuple(Member(**m, logit=float(coefficients[i]), abstained=float(coefficients[len(names) + i]))
                          for i, m in enumerate(members)), float(regression.intercept_[0]))


def stack_report(table: pd.DataFrame, members: list[dict], sources: pd.DataFrame | None = None,
                 resamples: int = RESAMPLES) -> dict:
    """Out of fold, each video scored by fits on the other folds: each member alone (its cross-fitted
    calibration, :data:`PRIOR` where it abstained), ``mean`` (of the calibrated members that scored)
    and ``stack``; balanced log-loss and AUC with bootstrap intervals (``resamples`` draws), pooled and
    per fold; what ``mean`` and ``stack`` gain over the first member alone, with paired bootstrap
    intervals (:func:`paired_intervals`); and with ``sources`` (``dataset``, ``method`` by video) per dataset and method (:func:`by_source`)."""
    names = [m["name"] for m in members]
    scores = pd.DataFrame(index=table.index)
    for name in names:
        scored = table[table[name].notna()]
        calibrated, _, chosen = out_of_fold(scored[["fold", "label"]].assign(prob=scored[name]))
        scores[name] = calibrated["prob" if chosen == "raw" else chosen]
    scores["mean"] = scores[names].mean(axis=1).fillna(PRIOR)
    scores[names] = scores[names].fillna(PRIOR)
    scores["stack"] = np.nan
    for fold in table["fold"].unique():
        held = (table["fold"] == fold).to_numpy()
        scores.loc[held, "stack"] = fit_stack(table[~held], members).predict(table.loc[held, names].to_numpy())
    pooled = {row: {k: v for k, v in {**label_metrics(table["label"], scores[row]),
                                      **intervals(table["label"], scores[row], resamples)}.items()
                    if k in ("videos", "logloss", "logloss_lo", "logloss_hi", "auc", "auc_lo", "auc_hi")}
              for row in scores.columns}
    per_fold = {str(fold): {row: label_metrics(table.label[held], scores.loc[held, row])["logloss"] for row in scores.columns}
                for fold, held in ((f, table["fold"] == f) for f in sorted(table["fold"].unique()))}
    first = names[0]  # what the ensemble must beat: the first member alone
    gains = {"member": first, **{row: paired_intervals(table["label"], scores[row], scores[first], resamples)
                                 for row in ("mean", "stack")}}
    report = {"videos": len(table), "regularisation_C": STACK_C, "out_of_fold": pooled, "per_fold_balanced_logloss": per_fold,
              "gain_over_first": gains}
    if sources is not None:
        long = scores.assign(video=table["video"], label=table["label"]).melt(["video", "label"], var_name="score",
                                                                              value_name="prob")
        rows = by_source(long.join(sources[["dataset", "method"]], on="video"), ["score"], resamples)
        report["by_source"] = rows[["score", "group", "videos", "logloss", "logloss_lo", "logloss_hi",
                                    "auc", "auc_lo", "auc_hi"]].to_dict("records")
    return report


def stack(members: list[tuple[Path, str, Path]], root: Path | None = None, labels: Path | None = None,
          which: str = "last", strategy: str = "confident", resamples: int = RESAMPLES) -> Stacking:
    """The stacking file of ``members`` (``(source, name in it, checkpoint)``), fitted on all their
    joined videos, with :func:`stack_report` as its report."""
    tables, entries = {}, []
    for source, name, checkpoint in members:
        tables[checkpoint.stem], used = member_scores(source, name, checkpoint, root, labels, which, strategy)
        entries.append({"name": checkpoint.stem, "checkpoint": checkpoint.name, "sha256": file_digest(checkpoint),
                        "strategy": used})
    if len(tables) < len(members):
        raise CalibrationError(f"two members share a checkpoint file stem: {[c.stem for _, _, c in members]}")
    table = join_members(tables)
    if table["fold"].nunique() < 2 or table["label"].nunique() < 2:
        raise CalibrationError(f"the members' joined videos ({len(table)}) need two folds or more and both labels")
    sources = index_folder(root, labels).videos.set_index("video") if root is not None and labels is not None else None
    report = stack_report(table, entries, sources, resamples)
    report["members"] = {c.stem: {"source": str(s), "name": n} for s, n, c in members}
    report["checkpoint"], report["strategy"] = which, strategy
    fitted = fit_stack(table, entries)
    return Stacking(fitted.members, fitted.intercept, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kernels.calibrate", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--crossval", type=Path, help="output folder of python -m training.crossval")
    source.add_argument("--details", type=Path, help="the detail file of a python -m kernels.predict run")
    source.add_argument("--stack", type=Path, metavar="OUT.json",
                        help="fit a stacking file of the --member models (the kernel reads weights/stacking.json)")
    parser.add_argument("--member", nargs=3, action="append", type=Path, metavar=("SOURCE", "NAME", "CHECKPOINT"),
                        help="with --stack, once per model: a crossval folder and its config, or a detail file and its "
                             "model, and the checkpoint the kernel loads for it (beside OUT.json)")
    parser.add_argument("--config", help="with --crossval: the config's name in it (its file name without .json)")
    parser.add_argument("--root", type=Path, help="with --details (or a detail-file member): the folder that run "
                        "scored (its --videos)")
    parser.add_argument("--labels", type=Path, help="with --details (or a detail-file member): the videos to fit on, "
                        "relative to --root (path,label[,original][,group]); their identity folds as prepare deals them")
    parser.add_argument("--model", help="with --details: the model's name in it (its checkpoint's file stem)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="last",
                        help="which checkpoint of each crossval fold run (default: %(default)s, chosen by nobody)")
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="confident",
                        help="the kernel's frame -> video rule to calibrate (default: %(default)s)")
    parser.add_argument("--into", type=Path, nargs="+", default=[],
                        help="checkpoints to store the calibration in (trained with the same config)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    needed = ("config",) if args.crossval else ("member",) if args.stack else ("root", "labels", "model")
    absent = [f"--{name}" for name in needed if getattr(args, name) is None]
    if absent:
        parser.error(f"{'--crossval' if args.crossval else '--stack' if args.stack else '--details'} needs "
                     f"{' and '.join(absent)}")
    if args.stack and args.into:
        parser.error("--stack writes its own file; --into is for one model's calibration")
    configure_logging(args.verbose)
    if args.stack:
        return _stack(args)
    try:
        runs = sorted((args.crossval / args.config).glob("fold*/last.pt")) if args.crossval else []
        family = payload_family(read_checkpoint(runs[0])) if runs else None  # the config's: frame or sequence
        for path in args.into:  # refuse a bad checkpoint before any work
            payload = read_checkpoint(path, family=family)
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


def _stack(args: argparse.Namespace) -> int:
    """``--stack``: fit, write and log the stacking file; returns the exit status."""
    try:
        members = [(source, str(name), checkpoint) for source, name, checkpoint in args.member]
        fitted = stack(members, args.root, args.labels, args.checkpoint, args.strategy)
    except (CalibrationError, CheckpointError, StackingError) as err:
        log.error("%s", err)
        return 2
    fitted.save(args.stack)
    elsewhere = [str(c) for _, _, c in members if c.parent.absolute() != args.stack.parent.absolute()]
    if elsewhere:
        log.warning("the kernel loads the members from beside %s; %s are not there", args.stack, elsewhere)
    report = fitted.report
    log.info("%d videos, out of fold (each fold's videos scored by fits on the others):\n%s\nper fold, balanced "
             "log-loss:\n%s", report["videos"], pd.DataFrame(report["out_of_fold"]).T.to_string(float_format="%.4f"),
             pd.DataFrame(report["per_fold_balanced_logloss"]).T.to_string(float_format="%.4f"))
    gains = report["gain_over_first"]
    log.info("gain over %s alone (paired bootstrap, 90%%; positive: better):\n%s", gains["member"],
             pd.DataFrame({row: gains[row] for row in ("mean", "stack")}).T.to_string(float_format="%.4f"))
    if "by_source" in report:
        table = pd.DataFrame(report["by_source"]).pivot(index="group", columns="score", values="auc")
        log.info("AUC by source (a method's fakes against every real video):\n%s", table.to_string(float_format="%.3f"))
    log.info("fitted on all videos, written to %s: intercept %.3f; %s", args.stack, fitted.intercept,
             "; ".join(f"{m.name}: logit {m.logit:.3f}, abstained {m.abstained:.3f}" for m in fitted.members))
    return 0


if __name__ == "__main__":
    sys.exit(main())
