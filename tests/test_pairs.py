"""Identity-paired training on a real prepared folder: each fake with its own original's crop of the
same frame, augmented alike, pairs kept whole by the sampler across processes, and configs that
cannot pair refused."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from models.zoo import ModelConfig
from plumbing.strict import ConfigError
from training.config import RunConfig
from training.dataset import CropDataset
from training.distributed import Context
from training.dropout import StructuredDropout
from training.pairs import PairSampler
from training.train import _loaders, make_datasets

CONFIG = ModelConfig("mobilenetv3_small_050", 64)
LANDMARKS = [f"lm{i}_{axis}" for i in range(5) for axis in "xy"]


def paired(prepared_dir, **options) -> CropDataset:
    return CropDataset(prepared_dir, CONFIG, train=True, pairs=True, **options)


def pair_rows(dataset: CropDataset) -> list[tuple[pd.Series, pd.Series]]:
    rows = dataset.table.iloc[dataset.order]
    return [(rows.iloc[k], rows.iloc[k + 1]) for k in range(0, len(rows), 2)]


def test_each_fake_comes_with_its_originals_crop_of_the_same_frame(prepared_dir):
    dataset = paired(prepared_dir)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        pairs = pair_rows(dataset)
        assert len(pairs) == min((dataset.table.label == 0).sum(), (dataset.table.label == 1).sum())
        for real, fake in pairs:
            assert (real.label, fake.label) == (0, 1)
            assert fake.real_crop == real.crop  # the fixture's fakes were all cut with their originals' boxes
            assert (real.frame, real.track, real.group) == (fake.frame, fake.track, fake.group)
            np.testing.assert_array_equal(real[LANDMARKS].to_numpy(float), fake[LANDMARKS].to_numpy(float))
        assert list(dataset.sources) == [0, 1] * len(pairs)


def test_a_fake_without_its_original_is_paired_within_its_identity(prepared_dir, tmp_path):
    copy = shutil.copytree(prepared_dir, tmp_path / "prepared")
    crops = pd.read_csv(copy / "crops.csv", keep_default_na=False)
    orphan = crops.loc[crops.label == 1, "video"].iloc[0]
    crops.loc[crops.video == orphan, "real_crop"] = ""
    crops.to_csv(copy / "crops.csv", index=False)
    dataset = paired(copy)
    reals_of = dataset.table[dataset.table.label == 0].groupby("group")["crop"].agg(set)
    checked = 0
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for real, fake in pair_rows(dataset):
            assert real.group == fake.group and real.crop in reals_of[fake.group]
            checked += fake.video == orphan
    assert checked  # the orphan was drawn and paired


def test_pair_members_are_dropped_out_and_augmented_alike(prepared_dir):
    dataset = paired(prepared_dir, dropout=StructuredDropout(parts=0.5, half_face=0.5, half_image=0.5))
    names = [(dataset[k]["dropout"], dataset[k + 1]["dropout"]) for k in range(0, len(dataset), 2)]
    assert all(real == fake for real, fake in names)
    assert len({name for name, _ in names}) > 1  # the draws vary between pairs, not within them
    unpaired = CropDataset(prepared_dir, CONFIG, train=True, dropout=StructuredDropout(parts=0.5, half_face=0.5, half_image=0.5))
    drawn = [unpaired[i]["dropout"] for i in range(len(unpaired))]
    assert drawn[0::2] != drawn[1::2]  # unpaired neighbours draw on their own


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_the_sampler_hands_whole_pairs_to_each_process(prepared_dir, replicas):
    dataset = paired(prepared_dir)
    shards = [list(PairSampler(dataset, replicas, rank)) for rank in range(replicas)]
    pairs = len(dataset) // 2
    for shard in shards:
        assert len(shard) == 2 * (pairs // replicas)
        assert all(shard[i] % 2 == 0 and shard[i + 1] == shard[i] + 1 for i in range(0, len(shard), 2))
    flat = sum(shards, [])
    assert len(set(flat)) == len(flat)  # no pair goes to two processes


def test_training_batches_hold_whole_pairs(prepared_dir):
    config = RunConfig.from_dict({"model": {"encoder": CONFIG.encoder, "input_size": 64},
                                  "train": {"epochs": 1, "batch_size": 4, "workers": 0}, "data": {"pairs": True}})
    train_set, val_set = make_datasets(prepared_dir, 0, config)
    loader, _ = _loaders(train_set, val_set, config.train, Context(0, 0, 1, torch.device("cpu")))
    batch = next(iter(loader))
    assert batch["target"].tolist() == pytest.approx([0.01, 0.99] * 2)  # real, its fake, real, its fake
    assert batch["group"][0::2] == batch["group"][1::2]


@pytest.mark.parametrize("change, words", [
    ({"train": {"epochs": 1, "batch_size": 5}}, "even train.batch_size"),
    ({"data": {"pairs": True, "mixup": 0.5}}, "mixup 0"),
    ({"data": {"pairs": True, "mix": {"real": 0.5, "pseudo": 0.5}}}, "default mix"),
])
def test_configs_that_cannot_pair_are_refused(change, words):
    values = {"model": {"encoder": CONFIG.encoder, "input_size": 64}, "train": {"epochs": 1, "batch_size": 4},
              "data": {"pairs": True}}
    values.update(change)
    if "data" not in change:
        values["data"] = {"pairs": True}
    with pytest.raises(ConfigError, match=words):
        RunConfig.from_dict(values)
