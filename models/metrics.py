"""The metric of the project's tables: log-loss per class and its balanced mean, and AUC.

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
