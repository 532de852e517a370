"""Leak-free cross-validation folds: groups of videos that must stay together, then k folds of them.

A video's *keys* name what it must never be separated from (its identity, its original, its DFDC
part, ...). Videos that share a key, directly or through others, form one group
(:func:`connected_groups`); :func:`assign_folds` then deals whole groups into k folds so that each
fold gets about 1/k of the real and 1/k of the fake videos.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def connected_groups(keys: Sequence[Iterable[str]]) -> list[str]:
    """One group name per row: rows that share a key, directly or through other rows, get the same.

    ``keys[i]`` are the keys of row ``i`` (at least one). A group is named by its smallest key, so
    the names do not depend on the order of the rows.
    """
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    rows = [list(k) for k in keys]
    for i, row in enumerate(rows):
        if not row:
            raise ValueError(f"row {i} has no group key")
        for key in row[1:]:
            a, b = find(row[0]), find(key)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the root is always the smallest key
    return [find(row[0]) for row in rows]


def assign_folds(groups: Sequence[str], labels: Sequence[int], k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold (0..k-1) of each row; all rows of a group get one fold, label counts as even as groups allow.

    Groups are dealt largest first (ties in a seeded random order), each to the fold where it
    raises ``sum over folds and labels of (count / target)^2`` least, ``target`` being a label's
    total / k: a greedy balance of the real and the fake counts at once. Fewer groups than folds
    leaves folds empty (with a warning).
    """
    if k < 1:
        raise ValueError(f"the number of folds must be at least 1, got {k}")
    groups = np.asarray(groups, dtype=object)
    labels = np.asarray(labels, dtype=np.int64)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} groups but {len(labels)} labels")
    names, group_of_row = np.unique(groups.astype(str), return_inverse=True)
    classes, label_of_row = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(names), len(classes)))
    np.add.at(counts, (group_of_row, label_of_row), 1)
    if len(names) < k:
        log.warning("%d groups for %d folds: %d fold(s) will be empty", len(names), k, k - len(names))

    weight = 1 / np.maximum(counts.sum(axis=0) / k, 1e-9) ** 2  # 1 / target^2 per label
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    filled = np.zeros((k, len(classes)))
    fold_of_group = np.empty(len(names), dtype=np.int64)
    for g in order:
        increase = ((2 * filled + counts[g]) * counts[g] * weight).sum(axis=1)
        fold = int(np.argmin(increase))
        fold_of_group[g] = fold
        filled[fold] += counts[g]
    return fold_of_group[group_of_row]
