"""Compare training configs by k-fold cross-validation: every config trains once per fold, and its
validation videos of all folds are pooled and scored together.

    python -m training.crossval --configs training/configs/selfblend/{fakes,pseudo,both}.json \
        --data prepared/ffpp --out runs/crossval [--folds 0 1 2 3 4]

Each run is ``OUT/<config name>/fold<K>``, trained by ``python -m training.train`` (a run cut off is
resumed, a finished one reused). Folds keep identities apart, so every video is scored once, by the
model that never saw its identity. Written to ``OUT``: ``videos.csv`` (config, checkpoint, fold,
video, label, prob: each validation video scored by the run's ``best.pt``, by its ``last.pt`` and at
its ``chosen`` epoch, as the mean of its crops), ``crops.csv`` (the same runs' crop probabilities with
frame and track, for ``python -m kernels.calibrate``), ``folds.csv`` (the metrics of each fold, and the
``epoch`` each checkpoint is of), ``summary.csv`` (the pooled metrics with 90% bootstrap intervals of
log-loss and AUC, also logged as a table) and ``methods.csv`` (the same per dataset, reals and fakes
of that dataset, and per manipulation method, its fakes against every real video).

The three checkpoints: ``best`` is the epoch with the lowest validation log-loss of its own fold, so
its numbers are optimistic; ``last`` is the end of training, chosen by nobody; ``chosen`` is the epoch
chosen on the other folds only (:func:`chosen_epochs`), the honest way to choose one: fold K's
epoch is the one with the lowest mean ``val_logloss`` (each run's ``metrics.csv``) over the runs of
the other folds cross-validated, and fold K's videos are scored as its run's validation scored them
at that epoch (``epoch_crops.csv``, recorded by the trainer in its own precision and device; no
checkpoint is kept per epoch). With one fold there is nothing to choose on: no ``chosen`` rows, and a
warning. A config whose runs predate ``epoch_crops.csv`` (or lack some epochs' rows: resumed across
the change) gets no ``chosen`` rows either, with a warning naming the runs.

Sequence configs (``"family": "sequence"``, ``training/configs/lrnet/``) train LRNet by ``python -m
training.train_sequences`` on the landmark sequences of ``--sequences`` (a ``python -m
preprocessing.prepare_sequences`` folder made from ``--data``, so the same videos and folds): in
``crops.csv`` their rows are 30-frame blocks (``frame``: the block's first frame, ``track``: the
face's track in its run), and a video's score is the kernel's rule for blocks, the sigmoid of their
mean logit (``kernels.calibrate --crossval ... --strategy logitmean`` makes the same from one face).
A video without a sequence abstains: it is absent from the config's rows (``videos`` in the summary
counts the videos scored). Their ``chosen`` epoch follows the same rule on the runs' balanced block
log-loss (epoch 0: the initial model).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.calibration import logit
from models.checkpoint import CheckpointError, load_model, read_checkpoint
from models.metrics import LEVEL, RESAMPLES, by_source, grouped_metrics
from models.precision import Precision
from plumbing.strict import ConfigError
from plumbing.device import DeviceError, default_device
from plumbing.fileio import atomic_write
from plumbing.logs import configure_logging

from . import train, train_sequences
from .dataset import CropDataset, PreparedDataError, make_loader, read_prepared
from .engine import predict
from .lifecycle import EPOCH_SCORES, read_epoch_scores

logger = logging.getLogger("training.crossval")

#: The checkpoints scored from the runs' files.
CHECKPOINTS = ("best", "last")
#: The epoch chosen on the other folds, scored from the run's ``epoch_crops.csv``.
CHOSEN = "chosen"
#: What the summary's rows are keyed by.
KEYS = ("config", "checkpoint")
METRICS = ("videos", "logloss", "logloss_real", "logloss_fake", "auc")
#: The summary's columns: the metrics with the bounds of their bootstrap intervals.
SUMMARY = ("videos", "logloss", "logloss_lo", "logloss_hi", "logloss_real", "logloss_fake", "auc", "auc_lo", "auc_hi")


def run_dir(out: Path, config: Path, fold: int) -> Path:
    return out / config.stem / f"fold{fold}"


class TrainingFailed(Exception):
    """A run ended with an error, which ``python -m training.train`` has logged."""


def train_fold(config: Path, data: Path, fold: int, run: Path) -> None:
    """Train ``config`` on ``fold`` into ``run``, resuming a run cut off; nothing when it is finished."""
    epochs = train.load_config(config).train.epochs
    done = len(pd.read_csv(run / "metrics.csv")) if (run / "metrics.csv").is_file() else 0
    if done >= epochs:
        logger.info("%s: finished (%d epochs), reused", run, done)
        return
    logger.info("%s: training %s on fold %d", run, config, fold)
    argv = ["--config", str(config), "--data", str(data), "--fold", str(fold), "--out", str(run)]
    if train.main(argv + (["--resume"] if (run / "last.pt").is_file() else [])) != 0:
        raise TrainingFailed


def scoring_precision(config: Path) -> Precision:
    """How a config's out-of-fold crops are scored: on this machine's device (a GPU when present), in
    the precision and memory format the config trains in (``auto``: the device's own)."""
    train_config = train.load_config(config).train
    return Precision.resolve(train_config.precision, default_device(), train_config.channels_last)


def score_run(run: Path, data: Path, fold: int, checkpoint: str, precision: Precision) -> pd.DataFrame:
    """The crop scores (``video``, ``frame``, ``track``, ``label``, ``prob``) of ``run``'s
    ``checkpoint`` on ``fold``, computed as ``precision`` says."""
    model = precision.model(load_model(run / f"{checkpoint}.pt"))
    dataset = CropDataset(data, model.config, fold)
    crops = predict(model, make_loader(dataset, batch_size=64), precision, desc=f"{run.parent.name} fold {fold} {checkpoint}")
    return dataset.table[["video", "frame", "track", "label"]].assign(prob=crops.prob.to_numpy())


@dataclass
class Results:
    """The tables :func:`crossvalidate` writes, as in the module doc."""

    crops: pd.DataFrame
    videos: pd.DataFrame
    folds: pd.DataFrame
    summary: pd.DataFrame
    methods: pd.DataFrame


def crossvalidate(configs: list[Path], data: Path, out: Path, folds: list[int], resamples: int = RESAMPLES,
                  sequences: Path | None = None) -> Results:
    """Train every config on every fold and score them; the summary's and the methods' intervals
    come from ``resamples`` bootstrap draws (0: none, NaN bounds). Sequence configs
    (:func:`train_sequences.is_sequence_config`) train on the landmark sequences in ``sequences``."""
    tables, epochs, by_logit = [], [], set()
    for config in configs:
        if train_sequences.is_sequence_config(config):
            if sequences is None:
                raise ConfigError(f"{config}: a sequence config needs --sequences")
            by_logit.add(config.stem)
        else:
            precision = scoring_precision(config)
        runs = {fold: run_dir(out, config, fold) for fold in folds}
        for fold, run in runs.items():
            if config.stem in by_logit:
                train_sequences.train_fold(config, sequences, fold, run)
                score = lambda checkpoint: train_sequences.score_run(run / f"{checkpoint}.pt", sequences, fold)
            else:
                train_fold(config, data, fold, run)
                score = lambda checkpoint: score_run(run, data, fold, checkpoint, precision)
            for checkpoint in CHECKPOINTS:
                tables.append(score(checkpoint).assign(config=config.stem, checkpoint=checkpoint, fold=fold))
                epochs.append((config.stem, checkpoint, fold, read_checkpoint(run / f"{checkpoint}.pt")["epoch"]))
        for fold, (epoch, scores) in chosen_scores(config.stem, runs).items():
            tables.append(scores.assign(config=config.stem, checkpoint=CHOSEN, fold=fold))
            epochs.append((config.stem, CHOSEN, fold, epoch))
    crops = pd.concat(tables, ignore_index=True)[[*KEYS, "fold", "video", "frame", "track", "label", "prob"]]
    videos = video_scores(crops, by_logit)
    by_fold = grouped_metrics(videos, [*KEYS, "fold"]).merge(
        pd.DataFrame(epochs, columns=[*KEYS, "fold", "epoch"]), on=[*KEYS, "fold"], how="left")
    by_fold = by_fold.reindex(columns=[*KEYS, "fold", "epoch", *METRICS])
    summary = grouped_metrics(videos, list(KEYS), resamples).reindex(columns=[*KEYS, *SUMMARY])
    return Results(crops, videos, by_fold, summary, _by_method(videos, data, resamples))


def chosen_epochs(curves: pd.DataFrame) -> dict[int, int]:
    """Each fold's epoch chosen on the other folds only. ``curves``: one column per fold, one row per
    epoch (the index), each run's validation log-loss. Fold K's epoch is the one with the lowest mean
    over the other folds' columns (a NaN, a run that validated nothing, is left out of the mean), among
    the rows (:func:`chosen_scores` passes the epochs every run recorded); ties go to the earlier epoch.
    Fold K's own column never counts. A fold with no epoch whose mean is defined (one fold alone, NaN
    everywhere) is absent from the result."""
    curves = curves.sort_index()
    chosen = {}
    for fold in curves.columns:
        mean = curves.drop(columns=fold).mean(axis=1).dropna()
        if len(mean):
            chosen[fold] = int(mean.idxmin())
    return chosen


def chosen_scores(config: str, runs: dict[int, Path]) -> dict[int, tuple[int, pd.DataFrame]]:
    """Fold -> (its :func:`chosen_epochs` epoch, the crop scores its run's validation recorded then:
    ``video``, ``frame``, ``track``, ``label``, ``prob``) of ``config``'s finished ``runs`` (fold ->
    folder). Empty, with a warning, with one fold or where a run's ``epoch_crops.csv`` is missing or lacks
    epochs of its ``metrics.csv`` (trained, or partly trained, before the file was written)."""
    if len(runs) < 2:
        logger.warning("%s: folds %s: no %r epoch, which is chosen on the other folds", config, list(runs), CHOSEN)
        return {}
    histories = {fold: pd.read_csv(run / "metrics.csv").set_index("epoch").val_logloss for fold, run in runs.items()}
    recorded = {fold: read_epoch_scores(run) for fold, run in runs.items() if (run / EPOCH_SCORES).is_file()}
    missing = [str(run) for fold, run in runs.items() if fold not in recorded  # a run that validated nothing has no rows
               or len(recorded[fold]) and set(recorded[fold].epoch) != set(histories[fold].index)]
    if missing:
        logger.warning("%s: no %r rows: no %s, or not of every epoch, in %s (trained before it was written)", config,
                       CHOSEN, EPOCH_SCORES, ", ".join(missing))
        return {}
    common = sorted(set.intersection(*(set(history.index) for history in histories.values())))
    return {fold: (epoch, recorded[fold][recorded[fold].epoch == epoch].drop(columns="epoch"))
            for fold, epoch in chosen_epochs(pd.DataFrame(histories).loc[common]).items()}


def video_scores(crops: pd.DataFrame, by_logit: set[str]) -> pd.DataFrame:
    """Each video's score: the mean of its crops' probabilities, or for the configs named in
    ``by_logit`` (sequence models) the kernel's rule for blocks, the sigmoid of their mean logit."""
    logits = crops.config.isin(by_logit).to_numpy()
    crops = crops.assign(prob=np.where(logits, logit(crops.prob), crops.prob))
    videos = crops.groupby([*KEYS, "fold", "video"], sort=False).agg(label=("label", "first"), prob=("prob", "mean"))
    videos = videos.reset_index()
    logits = videos.config.isin(by_logit).to_numpy()
    return videos.assign(prob=np.where(logits, 1 / (1 + np.exp(-videos.prob)), videos.prob))


def _by_method(videos: pd.DataFrame, data: Path, resamples: int) -> pd.DataFrame:
    """Rows of :data:`SUMMARY` per dataset and per manipulation method (:func:`models.metrics.by_source`),
    for each config and checkpoint."""
    sources = pd.read_csv(data / "videos.csv", dtype=str, keep_default_na=False).set_index("video")
    videos = videos.join(sources[["dataset", "method"]], on="video")
    return by_source(videos, list(KEYS), resamples).reindex(columns=[*KEYS, "group", *SUMMARY])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.crossval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", type=Path, required=True, help="JSON training configs to compare")
    parser.add_argument("--data", type=Path, required=True, help="folder written by python -m preprocessing.prepare")
    parser.add_argument("--out", type=Path, default=Path("runs/crossval"), help="output folder (default: runs/crossval)")
    parser.add_argument("--sequences", type=Path, help="folder written by python -m preprocessing.prepare_sequences "
                        "(needed by sequence configs, training/configs/lrnet/)")
    parser.add_argument("--folds", nargs="+", type=int, help="folds to validate on (default: every fold of --data)")
    parser.add_argument("--bootstrap", type=int, default=RESAMPLES, metavar="N",
                        help=f"bootstrap resamples for the summary's {LEVEL * 100:.0f}%% intervals (default: {RESAMPLES}; 0: none)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bootstrap < 0:
        parser.error(f"--bootstrap: a count of resamples >= 0, not {args.bootstrap}")
    configure_logging(args.verbose)
    try:
        folds = args.folds or sorted(read_prepared(args.data)["fold"].unique().tolist())
        results = crossvalidate(args.configs, args.data, args.out, folds, args.bootstrap, args.sequences)
    except (ConfigError, CheckpointError, DeviceError, PreparedDataError) as err:
        logger.error("%s", err)
        return 2
    except TrainingFailed:
        return 2
    for name, table in vars(results).items():
        with atomic_write(args.out / f"{name}.csv", "w", newline="") as f:
            table.to_csv(f, index=False)
    logger.info("pooled over folds %s (log-loss: the mean of the real and the fake videos' log-losses):\n%s",
                folds, results.summary.to_string(index=False, float_format="%.3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
