"""Leak-free folds: groups from shared keys, whole groups per fold, label counts balanced."""
import json
import logging

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from preprocessing.folds import assign_folds, connected_groups
from preprocessing.index import index_dfdc, index_ffpp


@pytest.mark.parametrize("keys, expected", [
    ([["a"], ["b"], ["c"]], ["a", "b", "c"]),
    ([["b"], ["a", "b"], ["c"]], ["a", "a", "c"]),
    ([["d", "c"], ["b", "c"], ["a", "b"], ["e"]], ["a", "a", "a", "e"]),  # a chain joins through c and b
    ([["x", "y"], ["z"], ["y", "z"]], ["x", "x", "x"]),  # a later row merges two earlier groups
])
def test_connected_groups_join_rows_that_share_keys(keys, expected):
    assert connected_groups(keys) == expected
    assert connected_groups(keys[::-1]) == expected[::-1]  # names do not depend on the row order


def test_a_row_without_keys_is_an_error():
    with pytest.raises(ValueError, match="row 1 has no group key"):
        connected_groups([["a"], []])


def random_table(seed: int):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 30, rng.integers(10, 120))
    groups = np.repeat(np.arange(len(sizes)), sizes).astype(str)
    fake_share = np.repeat(rng.uniform(0.1, 0.9, len(sizes)), sizes)
    return groups, (rng.uniform(size=len(groups)) < fake_share).astype(int)


def spread(folds, labels, k):
    """Largest difference between two folds' counts of one label."""
    return max(np.ptp(np.bincount(folds[labels == label], minlength=k)) for label in (0, 1))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 5])
def test_folds_keep_groups_whole_and_balance_labels_within_one_group(seed, k):
    groups, labels = random_table(seed)
    folds = assign_folds(groups, labels, k, seed)
    per_group = {}
    for group, fold in zip(groups, folds):
        assert per_group.setdefault(group, fold) == fold, f"group {group} split across folds"
    for label in (0, 1):
        counts = np.bincount(folds[labels == label], minlength=k)
        largest = max(np.unique(groups[labels == label], return_counts=True)[1])
        assert np.abs(counts - (labels == label).sum() / k).max() <= largest


def test_folds_are_better_balanced_than_sklearns_stratified_group_kfold():
    ours, theirs = [], []
    for seed in range(20):
        groups, labels = random_table(seed)
        ours.append(spread(assign_folds(groups, labels, 5, seed), labels, 5))
        oracle = np.empty(len(labels), dtype=int)
        splitter = StratifiedGroupKFold(5, shuffle=True, random_state=seed)
        for fold, (_, test) in enumerate(splitter.split(labels, labels, groups)):
            oracle[test] = fold
        theirs.append(spread(oracle, labels, 5))
    assert sum(ours) < sum(theirs) / 2, (ours, theirs)


def test_fewer_groups_than_folds_leaves_folds_empty_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        folds = assign_folds(["a", "a", "b"], [0, 1, 1], k=5)
    assert folds[0] == folds[1] != folds[2]
    assert "2 groups for 5 folds: 3 fold(s) will be empty" in caplog.text
    with pytest.raises(ValueError, match="at least 1"):
        assign_folds(["a"], [0], k=0)


def test_ffpp_folds_never_split_a_group_on_the_shared_data(data_dir):
    table = index_ffpp(data_dir / "ffpp").videos
    table["fold"] = assign_folds(table["group"], table["label"], k=5)
    assert (table.groupby("group")["fold"].nunique() == 1).all()
    fold = table.set_index("video")["fold"]
    for video in fold.index[fold.index.str.startswith("manipulated_sequences")]:
        x, y = video.rsplit("/", 1)[1].split("_")
        comp = video.split("/")[2]
        related = [f"original_sequences/youtube/{comp}/videos/{x}", f"original_sequences/youtube/{comp}/videos/{y}"]
        related += [v for v in fold.index if v.endswith(f"/{y}_{x}")]  # the mirror pair Y_X, any method
        assert {fold[v] for v in related if v in fold.index} <= {fold[video]}, video
    assert table["fold"].nunique() == 5


def test_dfdc_parts_are_never_split(data_dir, tmp_path):
    sample = data_dir / "dfdc/train_sample_videos"
    for part in range(6):
        folder = tmp_path / f"dfdc_train_part_{part}"
        folder.mkdir()
        entries = {}
        for i, source in enumerate(sorted(sample.glob("*.mp4"))):
            (folder / f"v{i}.mp4").symlink_to(source)
            entries[f"v{i}.mp4"] = {"label": "REAL" if i == 0 else "FAKE", "original": None if i == 0 else "v0.mp4"}
        (folder / "metadata.json").write_text(json.dumps(entries))
    table = index_dfdc(tmp_path).videos
    table["fold"] = assign_folds(table["group"], table["label"], k=3)
    table["part"] = table["video"].str.split("/").str[0]
    assert (table.groupby("part")["fold"].nunique() == 1).all()
    assert table.groupby("fold")["part"].nunique().tolist() == [2, 2, 2]
