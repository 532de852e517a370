"""A torch Dataset over prepared face crops (``OUT/crops.csv`` + ``OUT/videos.csv``, see the README's
prepared-data contract), with per-epoch class balancing, structured dropout, mixup and augmentation.

Every random choice for the sample at position ``i`` of epoch ``e`` is drawn from generators seeded
with ``(seed, e, i)``: a run is reproducible from its seed, and a sample's augmentation does not depend
on the number of DataLoader workers or on which worker loads it. With ``pairs`` the two members of a
pair draw their dropout and augmentation from one generator, so they are cut and augmented alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from models.zoo import ModelConfig, to_batch
from preprocessing.prepared import LANDMARK_COLUMNS, PreparedDataError, read_crop, read_mask, read_prepared

from .augment import applied, seed_pipeline, train_pipeline, val_pipeline
from .dropout import StructuredDropout
from .mixup import blend_pair, sample_weight
from .pairs import partners
from .selfblend import SelfBlend

#: Where a training sample comes from: a real crop, a fake crop, or a self-blended pseudo-fake made
#: from a real crop with landmarks (:mod:`training.selfblend`).
SOURCES = ("real", "fake", "pseudo")
#: The default shares of a balanced epoch: half real crops, half fake crops.
DEFAULT_MIX = {"real": 0.5, "fake": 0.5, "pseudo": 0.0}


def check_mix(mix: dict[str, float]) -> dict[str, float]:
    """``mix`` with every source of :data:`SOURCES` (absent ones 0); ValueError for unknown sources,
    negative shares or no share at all."""
    unknown = sorted(set(mix) - set(SOURCES))
    if unknown or any(not share >= 0 for share in mix.values()) or not sum(mix.values()) > 0:
        raise ValueError(f"mix: shares of {SOURCES} must be >= 0 and not all 0, got {mix}")
    return {source: float(mix.get(source, 0.0)) for source in SOURCES}


class CropDataset(Dataset):
    """Prepared crops as ``{"image", "target", "video", "group", "source", "dropout", "mask",
    "mask_known"}`` samples.

    ``image`` is a normalised ``(3, S, S)`` float tensor (``S = config.input_size``, normalised as
    :func:`models.zoo.to_batch` does), ``target`` a float32 scalar (1 = fake; a mixup weight when
    mixed; clipped to ``[clip_targets, 1 - clip_targets]`` when set), ``dropout`` names the dropout
    that fired (``none``, ``eyes``, ``half_face+cutout``, ...), ``source`` one of :data:`SOURCES`.
    ``mask`` is an ``(S, S)`` float tensor in [0, 1] that moves with the image: the difference mask of a
    fake (scaled by its mixup weight), the blend mask of a pseudo-fake, zeros for a real crop; and
    zeros with ``mask_known`` False for a fake prepared without one (the map head's loss skips it).

    ``fold=K`` selects the training folds (all but K) when ``train`` and fold K otherwise; ``None``
    takes every crop. Training draws structured ``dropout`` (None: off), runs ``pipeline`` (default
    :func:`train_pipeline`; :func:`val_pipeline` when not training), blends a fake with its aligned
    real with probability ``mixup``, and, with ``balance`` (default: when training), draws each
    :meth:`set_epoch` a fresh subset and order in the shares of ``mix`` (default :data:`DEFAULT_MIX`:
    as many fakes as reals). A ``pseudo`` share turns real crops into fakes with ``selfblend``; with
    ``{"real": 0.5, "pseudo": 0.5}`` a model learns from real videos alone (a crop whose face lies
    wholly outside it, where nothing can be blended, stays real). An epoch is as long as the
    scarcest source allows without repeating a crop within a source.

    ``pairs`` (balanced training, real and fake crops only, no mixup) draws the epoch's fakes as
    above and gives each its real partner (:mod:`training.pairs`): positions ``2k`` and ``2k + 1``
    are pair ``k``'s real and fake (reals may repeat, one per fake); :class:`training.pairs.PairSampler`
    keeps pairs whole in batches.
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
        mix: dict[str, float] | None = None,
        selfblend: SelfBlend = SelfBlend(),
        seed: int = 0,
        pairs: bool = False,
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
        self.mix = check_mix(DEFAULT_MIX if mix is None else mix)
        if self.mix["pseudo"] and not (train and self.balance):
            raise ValueError("mix: pseudo-fakes are drawn in balanced training epochs only (train=True, balance=True)")
        self.pairs = pairs and train
        if self.pairs and (not self.balance or self.mixup or self.mix != check_mix(DEFAULT_MIX)):
            raise ValueError("pairs: drawn in balanced training epochs of real and fake crops only, without mixup")
        self.selfblend = selfblend
        self.clip_targets = clip_targets
        self.seed = seed
        self._labels = self.table["label"].to_numpy()
        self._landmarks = self.table[list(LANDMARK_COLUMNS)].to_numpy(np.float32).reshape(-1, 5, 2)
        self._rows = self.table[["video", "crop", "mask", "real_crop", "label", "group"]].to_dict("records")
        self._has_landmarks = ~np.isnan(self._landmarks).any(axis=(1, 2))
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Choose epoch ``epoch``'s samples: drawn in the shares of ``mix`` and shuffled when balanced,
        else every crop in order. ``order`` holds their table positions, ``sources`` their sources."""
        self.epoch = epoch
        order = np.arange(len(self.table))
        sources = np.zeros(len(order), dtype=int)
        if self.balance:
            rng = np.random.default_rng((self.seed, epoch))
            pools = [order[self._labels == 0], order[self._labels == 1], order[(self._labels == 0) & self._has_landmarks]]
            shares = np.array([self.mix[source] for source in SOURCES]) / sum(self.mix.values())
            empty = [source for source, pool, share in zip(SOURCES, pools, shares) if share and not len(pool)]
            if empty:
                raise PreparedDataError(
                    f"{self.root}: cannot draw {' and '.join(empty)} crops: {len(pools[0])} real, {len(pools[1])} fake, "
                    f"{len(pools[2])} real with landmarks")
            length = min(len(pool) / share for pool, share in zip(pools, shares) if share)
            counts = [int(share * length + 1e-9) for share in shares]
            draws = [rng.choice(pool, count, replace=False) for pool, count in zip(pools, counts) if count]
            kinds = [np.full(count, kind) for kind, count in enumerate(counts) if count]
            shuffle = rng.permutation(sum(counts))
            order, sources = np.concatenate(draws)[shuffle], np.concatenate(kinds)[shuffle]
            if self.pairs:
                fakes = order[sources == SOURCES.index("fake")]
                order = np.stack([partners(self.table, fakes, rng), fakes], axis=1).ravel()
                sources = np.tile([SOURCES.index("real"), SOURCES.index("fake")], len(fakes))
        else:
            sources[self._labels == 1] = SOURCES.index("fake")
        self.order, self.sources = order, sources
        self.keys = np.arange(len(order)) // 2 if self.pairs else np.arange(len(order))

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = int(self.order[index])
        row = self._rows[position]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        shared = np.random.default_rng((self.seed, self.epoch, int(self.keys[index]), 1))  # a pair's, in pairs
        source = SOURCES[self.sources[index]]
        landmarks = self._landmarks[position] if self._has_landmarks[position] else None
        image = read_crop(self.root / row["crop"])
        target = float(source != "real")
        mask = None
        if source == "pseudo":
            image, blend = self.selfblend(image, landmarks, rng)
            mask = np.rint(blend * 255).astype(np.uint8)
            if not mask.any():  # the whole face lies outside the crop: nothing was blended
                source, target, mask = "real", 0.0, None
        elif row["mask"]:
            mask = read_mask(self.root / row["mask"], image.shape)
        if source == "fake" and row["real_crop"] and rng.random() < self.mixup:
            target = sample_weight(rng)
            image = blend_pair(read_crop(self.root / row["real_crop"]), image, target)
            mask = np.rint(mask * target).astype(np.uint8) if mask is not None else None
        names = []
        if self.dropout is not None:
            image, name = self.dropout(image, shared, landmarks, mask, fake=source != "real")
            names += [name] if name != "none" else []
        known = source == "real" or mask is not None
        seed_pipeline(self.pipeline, shared)
        result = self.pipeline(image=image, mask=mask if mask is not None else np.zeros(image.shape[:2], np.uint8))
        names += ["cutout"] if "CoarseDropout" in applied(result) else []
        if self.clip_targets is not None:
            target = min(max(target, self.clip_targets), 1.0 - self.clip_targets)
        return {
            "image": to_batch([result["image"]], self.config)[0],
            "target": torch.tensor(target, dtype=torch.float32),
            "video": row["video"],
            "group": row["group"],
            "source": source,
            "dropout": "+".join(names) or "none",
            "mask": torch.from_numpy(result["mask"]).float().div_(255.0),
            "mask_known": known,
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
