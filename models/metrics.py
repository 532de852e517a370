"""The metric of the project's tables: log-loss per class and its balanced mean, AUC, and their bootstrap intervals.

``logloss`` here is the *balanced* log-loss (the mean of the real and the fake items' log-losses);
the DFDC metric, sklearn's plain log-loss over every video, is ``submission.score``'s ``log_loss``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

#: Probabilities are clipped to [EPS, 1 - EPS] before the log, as sklearn's ``log_loss`` does.
EPS = float(np.finfo(float).eps)
#: The bootstrap intervals' level and default number of resamples.
LEVEL = 0.9
RESAMPLES = 1000


def label_metrics(labels: Sequence[int], probs: Sequence[float]) -> dict[str, float]:
    """``logloss_real`` and ``logloss_fake`` (log-loss over the real and over the fake items; NaN when
    there are none), ``logloss`` (the mean of the two, the DFDC winner's selection metric, blind to
    the real/fake ratio), ``auc`` (NaN with a single class) and ``videos`` (the count), of 0/1
    ``labels`` and their predicted ``probs``. sklearn's ``log_loss`` and ``roc_auc_score``, computed
    with numpy: fast enough for a bootstrap's thousands of calls."""
    labels, probs = np.asarray(labels, int), np.clip(np.asarray(probs, float), EPS, 1 - EPS)
    fake = labels == 1
    fakes, reals = int(fake.sum()), int((~fake).sum())
    losses = {"real": -np.log(1 - probs[~fake]).mean() if reals else math.nan,
              "fake": -np.log(probs[fake]).mean() if fakes else math.nan}
    auc = math.nan
    if fakes and reals:  # Mann-Whitney: the share of (fake, real) pairs ranked right, ties half
        ranks = pd.Series(probs).rank().to_numpy()
        auc = (ranks[fake].sum() - fakes * (fakes + 1) / 2) / (fakes * reals)
    return {
        "logloss": float(np.nanmean(list(losses.values()))),
        "logloss_real": float(losses["real"]),
        "logloss_fake": float(losses["fake"]),
        "auc": float(auc),
        "videos": len(labels),
    }


def intervals(labels: Sequence[int], probs: Sequence[float], resamples: int = RESAMPLES,
              seed: int = 0) -> dict[str, float]:
    """:data:`LEVEL` percentile-bootstrap intervals of ``logloss`` and ``auc`` (``<metric>_lo``,
    ``<metric>_hi``): real and fake videos are resampled apart, so every draw keeps both classes in
    their counts. Seeded: the same scores give the same intervals."""
    labels, probs = np.asarray(labels, int), np.asarray(probs, float)
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == label) for label in (0, 1)]
    draws = []
    for _ in range(resamples):
        index = np.concatenate([rng.choice(members, len(members)) for members in classes if len(members)])
        metrics = label_metrics(labels[index], probs[index])
        draws.append((metrics["logloss"], metrics["auc"]))
    low, high = np.percentile(np.array(draws), [50 * (1 - LEVEL), 50 * (1 + LEVEL)], axis=0)
    return {"logloss_lo": low[0], "logloss_hi": high[0], "auc_lo": low[1], "auc_hi": high[1]}


def paired_intervals(labels: Sequence[int], probs: Sequence[float], baseline: Sequence[float],
                     resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float]:
    """How much better ``probs`` are than ``baseline`` on the same items: the differences ``auc_gain``
    (AUC minus the baseline's) and ``logloss_gain`` (the baseline's log-loss minus theirs: positive is
    better), each with :data:`LEVEL` bootstrap bounds (``_lo``, ``_hi``) from draws of the same items
    for both, real and fake resampled apart as in :func:`intervals`."""
    labels, probs, baseline = np.asarray(labels, int), np.asarray(probs, float), np.asarray(baseline, float)

    def gains(index):
        ours, theirs = label_metrics(labels[index], probs[index]), label_metrics(labels[index], baseline[index])
        return ours["auc"] - theirs["auc"], theirs["logloss"] - ours["logloss"]

    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == label) for label in (0, 1)]
    draws = np.array([gains(np.concatenate([rng.choice(c, len(c)) for c in classes if len(c)])) for _ in range(resamples)])
    low, high = np.percentile(draws, [50 * (1 - LEVEL), 50 * (1 + LEVEL)], axis=0)
    auc, logloss = gains(np.arange(len(labels)))
    return {"auc_gain": auc, "auc_gain_lo": low[0], "auc_gain_hi": high[0],
            "logloss_gain": logloss, "logloss_gain_lo": low[1], "logloss_gain_hi": high[1]}


def grouped_metrics(videos: pd.DataFrame, keys: list[str], resamples: int = 0) -> pd.DataFrame:
    """One row of :func:`label_metrics` per group of ``keys`` of ``videos`` (``label``, ``prob``), with
    bootstrap :func:`intervals` when ``resamples``."""
    rows = [{**dict(zip(keys, key)), **label_metrics(part.label, part.prob),
             **(intervals(part.label, part.prob, resamples) if resamples else {})}
            for key, part in videos.groupby(keys, sort=False)]
    return pd.DataFrame(rows)


def by_source(videos: pd.DataFrame, keys: list[str], resamples: int = 0) -> pd.DataFrame:
    """:func:`grouped_metrics` per dataset (its reals and fakes: ``dataset <name>``) and per manipulation
    method (its fakes against every real video: ``<dataset> <method> vs all reals``), in a ``group``
    column, for each group of ``keys``; ``videos`` has ``label``, ``prob``, ``dataset`` and ``method``."""
    reals = videos[videos.label == 0]
    parts = [part.assign(group=f"dataset {dataset}") for dataset, part in videos.groupby("dataset")]
    parts += [pd.concat([reals, fakes]).assign(group=f"{fakes.dataset.iloc[0]} {method or '(no method)'} vs all reals")
              for (_, method), fakes in videos[videos.label == 1].groupby(["dataset", "method"])]
    return grouped_metrics(pd.concat(parts), [*keys, "group"], resamples)
