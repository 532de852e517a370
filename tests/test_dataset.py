"""The crop dataset on a real prepared folder: balanced epochs, folds, reproducible seeding, mixup,
the kernel's exact tensors with augmentation off, and clear errors on bad files."""
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from models.zoo import ModelConfig, to_batch
from training.augment import train_pipeline, val_pipeline
from training.dataset import CropDataset, PreparedDataError, make_loader, read_crop, read_prepared
from training.dropout import StructuredDropout
from training.mixup import blend_pair, mixup_batch, sample_weight

CONFIG = ModelConfig("mobilenetv3_small_050", 64)


@pytest.fixture
def prepared_copy(prepared_dir, tmp_path):
    """A private copy of the prepared folder, to damage."""
    return shutil.copytree(prepared_dir, tmp_path / "prepared")


def crops_of(prepared_dir):
    return pd.read_csv(prepared_dir / "crops.csv", keep_default_na=False)


def test_samples_follow_the_table(prepared_dir):
    table = crops_of(prepared_dir)
    dataset = CropDataset(prepared_dir, CONFIG)
    assert len(dataset) == len(table)
    for index in range(len(dataset)):
        item, row = dataset[index], table.iloc[index]
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert item["target"].item() == row["label"] and item["target"].dtype == torch.float32
        assert (item["video"], item["group"], item["dropout"]) == (row["video"], row["group"], "none")


@pytest.mark.parametrize("train_options", [
    {},  # validation
    {"train": True, "dropout": None, "pipeline": val_pipeline(64), "balance": False},  # training, augmentation off
], ids=["validation", "training without augmentation"])
def test_augmentation_off_gives_the_kernels_tensors(prepared_dir, train_options):
    dataset = CropDataset(prepared_dir, CONFIG, **train_options)
    for index in range(len(dataset)):
        crop = read_crop(prepared_dir / dataset.table["crop"][dataset.order[index]])
        assert torch.equal(dataset[index]["image"], to_batch([crop], CONFIG)[0])


def test_epochs_are_balanced_and_reshuffled(prepared_dir):
    table = crops_of(prepared_dir)
    reals, fakes = (table["label"] == 0).sum(), (table["label"] == 1).sum()
    assert fakes > reals  # the fixture must need balancing
    dataset = CropDataset(prepared_dir, CONFIG, train=True)
    orders, seen_fakes = [], set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        labels = dataset.table["label"].to_numpy()[dataset.order]
        assert (labels == 0).sum() == (labels == 1).sum() == reals == len(dataset) // 2
        assert len(set(dataset.order)) == len(dataset.order)
        orders.append(tuple(dataset.order))
        seen_fakes |= {i for i in dataset.order if labels[list(dataset.order).index(i)] == 1}
    assert len(set(orders)) == len(orders), "each epoch draws a new subset and order"
    assert len(seen_fakes) > reals, "balancing subsamples different fakes across epochs"
    dataset.set_epoch(2)
    assert tuple(dataset.order) == orders[2]


def test_folds_hold_out_whole_groups(prepared_dir):
    table = crops_of(prepared_dir)
    for fold in sorted(table["fold"].unique()):
        train = CropDataset(prepared_dir, CONFIG, fold=fold, train=True, balance=False)
        val = CropDataset(prepared_dir, CONFIG, fold=fold)
        assert set(train.table["fold"]) == set(table["fold"]) - {fold} and set(val.table["fold"]) == {fold}
        assert not set(train.table["group"]) & set(val.table["group"])
        assert len(train) + len(val) == len(table)


def test_same_seed_same_samples_other_seed_other_samples(prepared_dir):
    def items(seed):
        dataset = CropDataset(prepared_dir, CONFIG, train=True, seed=seed, mixup=0.5)
        return [dataset[i] for i in range(len(dataset))]

    first, again, other = items(3), items(3), items(4)
    for a, b in zip(first, again):
        assert torch.equal(a["image"], b["image"]) and a["target"] == b["target"] and a["dropout"] == b["dropout"]
    assert any(not torch.equal(a["image"], c["image"]) for a, c in zip(first, other))


def test_workers_do_not_change_the_samples(prepared_dir):
    dataset = CropDataset(prepared_dir, CONFIG, train=True, seed=1, mixup=0.5)
    dataset.set_epoch(1)
    batches = {}
    for workers in (0, 2):
        batches[workers] = list(make_loader(dataset, batch_size=3, workers=workers))
    assert len(batches[0]) == len(dataset) // 3  # the last short batch is dropped in training
    for a, b in zip(batches[0], batches[2], strict=True):  # strict: a shorter list is a failure
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
        assert a["video"] == b["video"] and a["dropout"] == b["dropout"]


def test_targets_clip_to_the_given_margin(prepared_dir):
    dataset = CropDataset(prepared_dir, CONFIG, train=True, clip_targets=0.01)
    targets = {round(dataset[i]["target"].item(), 6) for i in range(len(dataset))}
    assert targets == {0.01, 0.99}


def test_dropout_names_what_fired(prepared_dir):
    dataset = CropDataset(prepared_dir, CONFIG, train=True, dropout=StructuredDropout(parts=1.0),
                          pipeline=train_pipeline(64, cutout=1.0))
    names = {dataset[i]["dropout"] for i in range(len(dataset))}
    assert names <= {"eyes+cutout", "mouth+cutout", "nose+cutout", "cutout"} and "eyes+cutout" in names


# --- mixup ----------------------------------------------------------------------------------------

def test_paired_mixup_blends_a_fake_with_its_real(prepared_dir):
    dataset = CropDataset(prepared_dir, CONFIG, train=True, balance=False, mixup=1.0, dropout=None,
                          pipeline=val_pipeline(64))
    mixed = 0
    for index in range(len(dataset)):
        row, item = dataset.table.iloc[dataset.order[index]], dataset[index]
        t = item["target"].item()
        if not row["real_crop"]:
            assert t == row["label"]
            continue
        mixed += 1
        real, fake = read_crop(prepared_dir / row["real_crop"]), read_crop(prepared_dir / row["crop"])
        expected = to_batch([blend_pair(real, fake, np.float32(t))], CONFIG)[0]
        assert torch.allclose(item["image"], expected, atol=0.05)  # t went through float32
    assert mixed == (dataset.table["real_crop"] != "").sum() > 0


@pytest.mark.parametrize("t", [0.0, 0.3, 0.75, 1.0])
def test_blend_pair_is_the_weighted_sum(t):
    rng = np.random.default_rng(0)
    real, fake = (rng.integers(0, 256, (9, 7, 3), dtype=np.uint8) for _ in range(2))
    out = blend_pair(real, fake, t)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(float) - ((1 - t) * real + t * fake)).max() <= 0.5 + 1e-4  # rounded
    if t in (0.0, 1.0):
        assert (out == (real if t == 0 else fake)).all()


def test_blend_pair_needs_aligned_crops():
    with pytest.raises(ValueError, match="pixel-aligned"):
        blend_pair(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8), 0.5)


def test_mixup_weights_follow_beta_half_half():
    weights = np.array([sample_weight(np.random.default_rng(s)) for s in range(4000)])
    assert weights.mean() == pytest.approx(0.5, abs=0.03)
    assert weights.var() == pytest.approx(0.125, abs=0.01)  # Beta(0.5, 0.5): alpha beta / ((a+b)^2 (a+b+1))


def test_batch_mixup_blends_images_and_targets():
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).view(4, 3, 2, 2)
    targets = torch.tensor([0.0, 1.0, 1.0, 0.0])
    mixed, mixed_targets = mixup_batch(images, targets, np.random.default_rng(3))
    replay = np.random.default_rng(3)
    t, partner = torch.from_numpy(replay.beta(0.5, 0.5, 4)).float(), torch.from_numpy(replay.permutation(4))
    assert torch.allclose(mixed, (1 - t.view(4, 1, 1, 1)) * images + t.view(4, 1, 1, 1) * images[partner])
    assert torch.allclose(mixed_targets, (1 - t) * targets + t * targets[partner])


# --- bad input ------------------------------------------------------------------------------------

def test_a_truncated_crop_raises_naming_it(prepared_copy):
    dataset = CropDataset(prepared_copy, CONFIG)
    path = prepared_copy / dataset.table["crop"][5]
    path.write_bytes(path.read_bytes()[:200])
    for index in range(5):
        dataset[index]  # the others still load
    with pytest.raises(PreparedDataError, match=f"crop file {path}: cannot be decoded"):
        dataset[5]
    with pytest.raises(PreparedDataError, match=f"crop file {path}: cannot be decoded"):
        list(make_loader(dataset, batch_size=4))  # a loader never swaps in another sample


@pytest.mark.parametrize("damage, message", [
    ("missing crop", "crop file .*: missing"),
    ("mask of another size", "mask file .*: size"),
])
def test_bad_files_raise_naming_them(prepared_copy, damage, message):
    dataset = CropDataset(prepared_copy, CONFIG, train=True, balance=False)
    index = int(np.flatnonzero(dataset.table["mask"] != "")[0])
    row = dataset.table.iloc[index]
    if damage == "missing crop":
        (prepared_copy / row["crop"]).unlink()
    else:
        cv2.imwrite(str(prepared_copy / row["mask"]), np.zeros((5, 5), np.uint8))
    with pytest.raises(PreparedDataError, match=message):
        dataset[index]


@pytest.mark.parametrize("edit, message", [
    (lambda c, v: (c.drop(columns="fold"), v), r"crops.csv: missing column\(s\) \['fold'\]"),
    (lambda c, v: (c, v.iloc[1:]), "video\\(s\\) absent from videos.csv"),
    (lambda c, v: (c.assign(label=2), v), r"labels must be 0 or 1, found \[2\]"),
    (lambda c, v: (c[c["label"] == "1"], v), "cannot draw real crops: 0 real, 8 fake"),
], ids=["missing column", "unknown video", "bad label", "no reals"])
def test_broken_tables_raise_clear_errors(prepared_copy, edit, message):
    crops = pd.read_csv(prepared_copy / "crops.csv", dtype=str, keep_default_na=False)
    videos = pd.read_csv(prepared_copy / "videos.csv", dtype=str, keep_default_na=False)
    crops, videos = edit(crops, videos)
    crops.to_csv(prepared_copy / "crops.csv", index=False)
    videos.to_csv(prepared_copy / "videos.csv", index=False)
    with pytest.raises(PreparedDataError, match=message):
        CropDataset(prepared_copy, CONFIG, train=True)


def test_failed_videos_and_absent_masks_and_landmarks(prepared_copy):
    crops = pd.read_csv(prepared_copy / "crops.csv", dtype=str, keep_default_na=False)
    videos = pd.read_csv(prepared_copy / "videos.csv", dtype=str, keep_default_na=False)
    failed = videos["video"][1]
    videos.loc[1, "status"] = "failed: no decodable frame"
    fakes = crops.index[(crops["label"] == "1") & (crops["video"] != failed)]
    crops.loc[fakes[0], ["mask", "real_crop"]] = ""  # a fake without an aligned original
    crops.loc[fakes[1], ["lm0_x", "lm0_y"]] = ""  # a crop without landmarks
    crops.to_csv(prepared_copy / "crops.csv", index=False)
    videos.to_csv(prepared_copy / "videos.csv", index=False)
    table = read_prepared(prepared_copy)
    assert failed not in set(table["video"]) and len(table) == len(crops) - (crops["video"] == failed).sum()
    assert np.isnan(table["lm0_x"]).sum() == 1
    dataset = CropDataset(prepared_copy, CONFIG, train=True, balance=False, mixup=1.0,
                          dropout=StructuredDropout(parts=1.0, half_image=1.0))
    names = {dataset[i]["dropout"].split("+")[0] for i in range(len(dataset))}
    assert names <= {"eyes", "mouth", "nose", "half_image", "none", "cutout"}
