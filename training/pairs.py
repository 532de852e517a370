"""Identity-paired training: each fake crop comes with a real crop of the same person, in the same batch.

A fake that ``prepare`` cut with its original's box (``real_crop`` set) is paired with exactly that
crop: the original's face on the same frame, pixel-aligned, so the manipulation is the only thing
that tells the two apart. A fake without one (Celeb-DF, DFDC clips whose original is absent) is
paired with a real crop of its own identity group where the group has one, else with any real crop.
Pairs are laid out as consecutive ``(real, fake)`` positions of an epoch; :class:`PairSampler`
hands whole pairs to each process, so a batch of even size holds both members of each of its pairs.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
from torch.utils.data import Dataset, Sampler


def partners(table: pd.DataFrame, fakes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The table position of the real crop paired with each fake position in ``fakes`` (rows of
    ``table``: ``crop``, ``real_crop``, ``label``, ``group``), as the module doc says."""
    reals = np.flatnonzero(table["label"].to_numpy() == 0)
    if not len(reals):
        raise ValueError("pairs: no real crop to pair the fakes with")
    position = dict(zip(table["crop"].to_numpy()[reals], reals))
    groups = table["group"].to_numpy()
    by_group = pd.Series(reals).groupby(groups[reals]).agg(list).to_dict()
    out = np.empty(len(fakes), dtype=int)
    for i, fake in enumerate(fakes):
        own = position.get(table["real_crop"].iat[fake])
        out[i] = own if own is not None else rng.choice(by_group.get(groups[fake], reals))
    return out


class PairSampler(Sampler[int]):
    """The positions of a paired epoch (``dataset[2k]`` real, ``dataset[2k + 1]`` its fake) for process
    ``rank`` of ``replicas``: every ``replicas``-th pair, members kept consecutive, the pairs that do not
    divide evenly dropped. The dataset shuffles its pairs each epoch; this keeps them whole."""

    def __init__(self, dataset: Dataset, replicas: int = 1, rank: int = 0):
        self.dataset, self.replicas, self.rank = dataset, replicas, rank

    def _pairs(self) -> range:
        count = len(self.dataset) // 2
        return range(self.rank, count - count % self.replicas, self.replicas)

    def __iter__(self) -> Iterator[int]:
        for pair in self._pairs():
            yield 2 * pair
            yield 2 * pair + 1

    def __len__(self) -> int:
        return 2 * len(self._pairs())
