"""A torch Dataset over prepared face crops (``OUT/crops.csv`` + ``OUT/videos.csv``, see the README's
prepared-data contract), with per-epoch class balancing, structured dropout, mixup and augmentation.

Every random choice for the sample at position ``i`` of epoch ``e`` is drawn from a generator seeded
with ``(seed, e, i)``: a run is reproducible from its seed, and a sample's augmentation does not depend
on the number of DataLoader workers or on which worker loads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import applied, seed_pipeline, train_pipeline, val_pipeline
from .dropout import StructuredDropout
from .mixup import blend_pair, sample_weight
from .zoo import ModelConfig, to_batch

LANDMARK_COLUMNS = tuple(f"lm{i}_{axis}" for i in range(5) for axis in "xy")
CROP_COLUMNS = ("video", "crop", "mask", "real_crop", "frame", "track", "label", "group", "fold", *LANDMARK_COLUMNS)
VIDEO_COLUMNS = ("video", "status")


class PreparedDataError(ValueError):
    """The prepared folder breaks its contract: a missing table or column, or an unreadable crop."""


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise PreparedDataError(f"{path}: missing (run python -m preprocessing.prepare first)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PreparedDataError(f"{path}: missing column(s) {missing}")
    return table


def read_prepared(root: str | Path) -> pd.DataFrame:
    """``crops.csv`` of the videos ``videos.csv`` marks ``ok``, typed: ``frame``, ``track``, ``label``
    and ``fold`` int, landmarks float (NaN where absent), ``mask`` / ``real_crop`` '' where absent."""
    root = Path(root)
    crops = _read_table(root / "crops.csv", CROP_COLUMNS)
    videos = _read_table(root / "videos.csv", VIDEO_COLUMNS)
    unknown = sorted(set(crops["video"]) - set(videos["video"]))
    if unknown:
        raise PreparedDataError(f"{root / 'crops.csv'}: video(s) absent from videos.csv: {unknown[:5]}")
    crops = crops[crops["video"].isin(videos.loc[videos["status"] == "ok", "video"])].copy()
    try:
        for column in ("frame", "track", "label", "fold"):
            crops[column] = crops[column].astype(int)
        for column in LANDMARK_COLUMNS:
            crops[column] = pd.to_numeric(crops[column].replace("", np.nan))
    except ValueError as err:
        raise PreparedDataError(f"{root / 'crops.csv'}: {err}") from err
    bad = sorted(set(crops["label"]) - {0, 1})
    if bad:
        raise PreparedDataError(f"{root / 'crops.csv'}: labels must be 0 or 1, found {bad}")
    return crops.reset_index(drop=True)


def read_crop(path: Path) -> np.ndarray:
    """An RGB uint8 crop; :class:`PreparedDataError` naming the file when it is missing or undecodable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        cause = "cannot be decoded (empty, truncated or not an image)" if path.is_file() else "missing"
        raise PreparedDataError(f"crop file {path}: {cause}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """An 8-bit difference mask of a crop of ``shape``; :class:`PreparedDataError` naming the file when
    it is missing, undecodable or not the crop's size."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    if mask is None:
        cause = "cannot be decoded (empty, truncated or not an image)" if path.is_file() else "missing"
        raise PreparedDataError(f"mask file {path}: {cause}")
    if mask.shape != shape[:2]:
        raise PreparedDataError(f"mask file {path}: size {mask.shape} differs from its crop's {shape[:2]}")
    return mask


class CropDataset(Dataset):
    """Prepared crops as ``{"image", "target", "video", "group", "dropout"}`` samples.

    ``image`` is a normalised ``(3, S, S)`` float tensor (``S = config.input_size``, normalised as
    :func:`training.zoo.to_batch` does), ``target`` a float32 scalar (1 = fake; a mixup weight when
    mixed; clipped to ``[clip_targets, 1 - clip_targets]`` when set), ``dropout`` names the dropout
    that fired (``none``, ``eyes``, ``half_face+cutout``, ...).

    ``fold=K`` selects the training folds (all but K) when ``train`` and fold K otherwise; ``None``
    takes every crop. Training draws structured ``dropout`` (None: off), runs ``pipeline`` (default
    :func:`train_pipeline`; :func:`val_pipeline` when not training), blends a fake with its aligned
    real with probability ``mixup``, and, with ``balance`` (default: when training), keeps as many
    fakes as reals (or reals as fakes), a fresh subset and order each :meth:`set_epoch`.
    """

    def __init__(
        self,
        root: str | Path,
        config: ModelConfig,
        fold: int | None = None,
        train: bool = False,
        *,
        balance: bool | None = None,
        dropout: StructuredDropout | None = StructuredDropout(),
        pipeline: A.Compose | None = None,
        mixup: float = 0.0,
        clip_targets: float | None = None,
        seed: int = 0,
    ):
        self.root = Path(root)
        table = read_prepared(self.root)
        if fold is not None:
            table = table[(table["fold"] != fold) if train else (table["fold"] == fold)]
        if table.empty:
            raise PreparedDataError(f"{self.root}: no crops for fold {fold} ({'train' if train else 'validation'})")
        self.table = table.reset_index(drop=True)
        self.config = config
        self.train = train
        self.balance = train if balance is None else balance
        self.dropout = dropout if train else None
        if pipeline is None:
            pipeline = (train_pipeline if train else val_pipeline)(config.input_size)
        self.pipeline = pipeline
        self.mixup = mixup if train else 0.0
        self.clip_targets = clip_targets
        self.seed = seed
        self._labels = self.table["label"].to_numpy()
        self._landmarks = self.table[list(LANDMARK_COLUMNS)].to_numpy(np.float32).reshape(-1, 5, 2)
        self._rows = self.table[["video", "crop", "mask", "real_crop", "label", "group"]].to_dict("records")
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Choose epoch ``epoch``'s samples: balanced and shuffled when set so, else every crop in order."""
        self.epoch = epoch
        order = np.arange(len(self.table))
        if self.balance:
            rng = np.random.default_rng((self.seed, epoch))
            real, fake = order[self._labels == 0], order[self._labels == 1]
            count = min(len(real), len(fake))
            if count == 0:
                raise PreparedDataError(f"{self.root}: cannot balance {len(real)} real and {len(fake)} fake crops")
            order = rng.permutation(np.concatenate([rng.choice(real, count, replace=False),
                                                    rng.choice(fake, count, replace=False)]))
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = int(self.order[index])
        row = self._rows[position]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image = read_crop(self.root / row["crop"])
        target = float(row["label"])
        if row["real_crop"] and rng.random() < self.mixup:
            target = sample_weight(rng)
            image = blend_pair(read_crop(self.root / row["real_crop"]), image, target)
        names = []
        if self.dropout is not None:
            landmarks = self._landmarks[position]
            mask = read_mask(self.root / row["mask"], image.shape) if row["mask"] else None
            image, name = self.dropout(image, rng, None if np.isnan(landmarks).any() else landmarks,
                                       mask, fake=row["label"] == 1)
            names += [name] if name != "none" else []
        seed_pipeline(self.pipeline, rng)
        result = self.pipeline(image=image)
        names += ["cutout"] if "CoarseDropout" in applied(result) else []
        if self.clip_targets is not None:
            target = min(max(target, self.clip_targets), 1.0 - self.clip_targets)
        return {
            "image": to_batch([result["image"]], self.config)[0],
            "target": torch.tensor(target, dtype=torch.float32),
            "video": row["video"],
            "group": row["group"],
            "dropout": "+".join(names) or "none",
        }


def make_loader(dataset: CropDataset, batch_size: int, workers: int = 0, pin_memory: bool | None = None,
                sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader in the dataset's epoch order (call ``dataset.set_epoch`` before each epoch; workers
    are started per epoch so they see it), pinned memory when CUDA is present, the last short batch
    dropped when training. Pass a ``DistributedSampler(dataset, shuffle=False)`` to split it across ranks.

    Workers need no seeding of their own (see the module docstring), and must not call
    ``cv2.setNumThreads``: in a forked worker it deadlocks on the parent's thread pool."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=dataset.train,
    )
