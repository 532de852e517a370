"""Score a submission against known labels: log-loss (the DFDC metric), AUC, accuracy.

``log_loss`` here is the DFDC metric: sklearn's plain log-loss, the mean over every video. Training
and cross-validation report ``logloss``, the *balanced* log-loss (the mean of the real videos' and
the fake videos' log-losses), which does not move with the share of fakes.

    python -m submission.score --submission X.csv --labels metadata.json|labels.csv [--plots DIR]

Labels come from a DFDC ``metadata.json`` (``{"name.mp4": {"label": "FAKE"|"REAL"}}``) or a CSV with
``path`` (or ``filename``) and ``label`` (``FAKE``/``REAL`` or 1/0), optionally ``dataset`` and
``method``, which add per-group rows. A submission name matches a label whose path equals it or
ends with ``/`` + it. Prints a table with the constant-0.5 baseline beside, and saves a ROC curve
and a reliability diagram.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score, roc_curve

from .io import SubmissionError, read_submission

log = logging.getLogger("submission.score")
BASELINE = math.log(2)  # log-loss of answering 0.5 everywhere


def read_labels(path: str | Path) -> pd.DataFrame:
    """Labels as a table with ``path``, ``label`` (1 fake, 0 real) and, where known, ``dataset``, ``method``."""
    path = Path(path)
    if path.suffix == ".json":
        meta = json.loads(path.read_text())
        table = pd.DataFrame({"path": list(meta), "label": [v["label"] for v in meta.values()]})
    else:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "path" not in table and "filename" in table:
            table = table.rename(columns={"filename": "path"})
    if not {"path", "label"} <= set(table.columns):
        raise SubmissionError(f"{path}: labels need 'path' (or 'filename') and 'label' columns")
    mapping = {"FAKE": 1, "REAL": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0}
    bad = ~table["label"].astype(str).str.upper().isin(mapping)
    if bad.any():
        raise SubmissionError(f"{path}: label {table['label'][bad].iloc[0]!r} is neither FAKE/REAL nor 1/0")
    table["label"] = table["label"].astype(str).str.upper().map(mapping).astype(int)
    return table


def match(submission: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The submission's rows joined with their labels (``y``), unmatched rows dropped with a warning."""
    by_path = dict(zip(labels["path"], labels.index))
    rows, unmatched = [], []
    for filename, prob in zip(submission["filename"], submission["label"]):
        if filename in by_path:
            hits = [by_path[filename]]
        else:
            hits = labels.index[labels["path"].str.endswith("/" + filename)].tolist()
        if len(hits) > 1:
            raise SubmissionError(f"{filename} matches {len(hits)} labelled files: name submissions by relative path")
        if not hits:
            unmatched.append(filename)
            continue
        row = labels.loc[hits[0]].to_dict()
        rows.append({**row, "filename": filename, "prob": prob, "y": row["label"]})
    if unmatched:
        log.warning("%d submission row(s) have no label and are not scored, e.g. %s", len(unmatched), unmatched[0])
    if not rows:
        raise SubmissionError("no submission row matches a label")
    return pd.DataFrame(rows)


def metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Plain log-loss (the DFDC metric), AUC (NaN with one class), accuracy at 0.5, and the constant-0.5 baseline."""
    y, prob = np.asarray(y), np.asarray(prob, dtype=np.float64)
    return {
        "videos": len(y),
        "fake": int(y.sum()),
        "log_loss": log_loss(y, prob, labels=[0, 1]),
        "auc": roc_auc_score(y, prob) if 0 < y.sum() < len(y) else math.nan,
        "accuracy": accuracy_score(y, prob > 0.5),
        "baseline_log_loss": BASELINE,
    }


def score(matched: pd.DataFrame) -> pd.DataFrame:
    """Metrics of matched rows (see :func:`match`): one row for all, then one per dataset and per
    method where the labels name them."""
    rows = [{"group": "all", **metrics(matched["y"], matched["prob"])}]
    for column in ("dataset", "method"):
        if column in matched:
            for value, part in matched.groupby(column):
                if value:
                    rows.append({"group": f"{column}={value}", **metrics(part["y"], part["prob"])})
    return pd.DataFrame(rows)


def plot(matched: pd.DataFrame, out_dir: Path, stem: str) -> list[Path]:
    """ROC curve and reliability diagram (10 bins) as PNGs; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    y, prob = matched["y"].to_numpy(), matched["prob"].to_numpy()
    paths = []
    if 0 < y.sum() < len(y):
        fpr, tpr, _ = roc_curve(y, prob)
        fig = Figure(figsize=(4.5, 4.5))
        ax = fig.subplots()
        ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, prob):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
        ax.set(xlabel="false positive rate (reals called fake)", ylabel="true positive rate (fakes caught)",
               title="ROC")
        ax.legend(loc="lower right")
        paths.append(out_dir / f"{stem}_roc.png")
        fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    bins = np.clip((prob * 10).astype(int), 0, 9)
    centres, observed, counts = [], [], []
    for b in range(10):
        inside = bins == b
        if inside.any():
            centres.append(prob[inside].mean())
            observed.append(y[inside].mean())
            counts.append(int(inside.sum()))
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(centres, observed, "o-", label="submission")
    for x, yv, n in zip(centres, observed, counts):
        ax.annotate(str(n), (x, yv), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability of fake", ylabel="share of fakes",
           title="Reliability (videos per bin)")
    ax.legend(loc="upper left")
    paths.append(out_dir / f"{stem}_reliability.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submission.score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submission", type=Path, required=True, help="submission CSV")
    parser.add_argument("--labels", type=Path, required=True, help="metadata.json or labels CSV")
    parser.add_argument("--plots", type=Path, help="folder for the PNGs (default: beside the submission)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        submission = read_submission(args.submission)
        labels = read_labels(args.labels)
        matched = match(submission, labels)
        table = score(matched)
        pictures = plot(matched, args.plots or args.submission.parent, args.submission.stem)
    except SubmissionError as err:
        log.error("%s", err)
        return 1
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    log.info("plots: %s", ", ".join(map(str, pictures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
