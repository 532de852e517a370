"""A training run's life in its ``--out`` folder, shared by ``training.train`` and
``training.pretrain_mae``: a fresh run refuses a folder that holds one, a resumed run continues only
with the settings it was made with, an epoch is a fixed number of batches cycled from its loader,
and the history is written, atomically, as ``metrics.csv`` and a plot after every epoch, with each
epoch's validation scores per crop in ``epoch_crops.csv`` (:func:`record_epoch_scores`). ``last.pt``
records the precision the run resolved; a run resumed where it resolves differently (an A100's bf16
resumed on a T4 in fp16, a CPU run resumed on a GPU) carries its weights and optimizer state over and
converts its gradient scaler (:func:`resumed_scaler`).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import torch
from torch.utils.data import DataLoader

from models.checkpoint import read_checkpoint
from models.precision import Precision
from plumbing.strict import ConfigError
from plumbing.fileio import atomic_write

#: What a resumable run's folder holds: its last epoch, with the optimizer's state.
LAST = "last.pt"
#: Every epoch's validation scores, one row per (epoch, validation crop or block).
EPOCH_SCORES = "epoch_crops.csv"

logger = logging.getLogger(__name__)


def check_fresh(out: Path) -> None:
    """Refuse to start a new run in ``out`` when it holds one."""
    if (out / LAST).exists():
        raise ConfigError(f"{out} already holds a run ({LAST}): pass --resume to continue it, or choose another --out")


def resume_state(out: Path, settings: dict[str, dict[str, Any]], may_change: Iterable[str] = ()) -> dict[str, Any]:
    """The checkpoint ``out/last.pt`` to continue, checked against the resuming run's ``settings``
    (section -> key -> value, as the checkpoint stores them); keys named in ``may_change`` may differ."""
    path = out / LAST
    if not path.is_file():
        raise ConfigError(f"{out}: nothing to resume (no {LAST}); drop --resume to start a new run")
    state = read_checkpoint(path, family="frame")
    saved = {f"{section}.{k}": v for section in settings for k, v in state.get(section, {}).items()}
    wanted = {f"{section}.{k}": v for section, values in settings.items() for k, v in values.items()}
    changed = sorted(k for k in saved.keys() | wanted.keys()
                     if saved.get(k) != wanted.get(k) and k.split(".", 1)[1] not in set(may_change))
    if changed:
        raise ConfigError(f"{path}: cannot resume with a different config: "
                          + ", ".join(f"{k} {saved.get(k)!r} -> {wanted.get(k)!r}" for k in changed))
    return state


def resumed_scaler(state: dict[str, Any] | None, precision: Precision, out: Path) -> torch.amp.GradScaler:
    """``precision``'s gradient scaler, continuing the one the resumed checkpoint ``state`` saved (None: a
    fresh run). Where the run resolved another precision (``state["precision"]``; in checkpoints from
    before it was recorded, fp16 exactly when a scaler state was saved) it converts as
    :meth:`Precision.scaler` does and says so."""
    if state is None:
        return precision.scaler()
    saved = state.get("precision") or ("fp16" if state.get("scaler") else None)
    if saved is not None and saved != precision.name:
        logger.warning("%s trained in %s; it continues in %s on %s, with its weights and optimizer state%s",
                       out / LAST, saved, precision.name, precision.device,
                       " and a fresh gradient scale" if precision.scaler().is_enabled() else "")
    return precision.scaler(state.get("scaler"))


def epoch_batches(loader: DataLoader, epoch: int, iterations: int) -> Iterator[Any]:
    """``iterations`` batches for ``epoch``: passes over ``loader``, each shuffled afresh (its sampler's
    and its dataset's ``set_epoch``, where they have one), cut at the count."""
    passes = math.ceil(iterations / len(loader))
    taken = 0
    for repeat in range(passes):
        n = epoch * passes + repeat
        for each in (loader.sampler, loader.dataset):
            if hasattr(each, "set_epoch"):
                each.set_epoch(n)
        for batch in loader:
            yield batch
            taken += 1
            if taken == iterations:
                return


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """``out/metrics.csv``: one row per epoch, atomically."""
    _write_csv(out / "metrics.csv", pd.DataFrame(history))


def record_epoch_scores(out: Path, epoch: int, scores: pd.DataFrame) -> None:
    """Make ``scores`` (one row per validation crop) ``epoch``'s rows of ``out/epoch_crops.csv``, with an
    ``epoch`` column first, atomically. Rows of ``epoch`` or later already there are dropped: a run
    resumed from an earlier ``last.pt`` (killed after writing them) repeats the epoch without doubling
    its rows, and a fresh run replaces what a run killed before its first ``last.pt`` left."""
    path = out / EPOCH_SCORES
    kept = read_epoch_scores(out) if path.is_file() and epoch > 0 else pd.DataFrame()
    rows = scores.assign(epoch=epoch)[["epoch", *scores.columns]]
    write_epoch_scores(out, pd.concat([kept[kept.epoch < epoch], rows], ignore_index=True) if len(kept) else rows)


def write_epoch_scores(out: Path, table: pd.DataFrame) -> None:
    """``out/epoch_crops.csv``: every epoch's validation scores (``epoch`` and one row per crop), atomically."""
    _write_csv(out / EPOCH_SCORES, table)


def read_epoch_scores(run: Path) -> pd.DataFrame:
    """A run's ``epoch_crops.csv`` (video ids as strings)."""
    return pd.read_csv(run / EPOCH_SCORES, dtype={"video": str}, keep_default_na=False)


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_write(path, "w", newline="") as f:
        table.to_csv(f, index=False)
