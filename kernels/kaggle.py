"""Where a Kaggle notebook keeps its inputs and expects its output."""
from __future__ import annotations

from pathlib import Path

#: Kaggle mounts competition data and attached datasets here (read-only); its presence means "in Kaggle".
KAGGLE_INPUT = Path("/kaggle/input")
#: The DFDC notebooks' time limit: 9 hours of run time.
KAGGLE_LIMIT_S = 9 * 3600.0


def default_submission() -> Path:
    """``submission.csv`` in the working directory inside Kaggle (what it collects from
    ``/kaggle/working``), ``submission/submission.csv`` elsewhere."""
    return Path("submission.csv") if KAGGLE_INPUT.is_dir() else Path("submission/submission.csv")
