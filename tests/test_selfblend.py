"""Self-blended pseudo-fakes on real prepared crops: the generator's guarantees, the training mix of
real crops, fakes and pseudo-fakes, and a training run on real videos alone."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.zoo import ConfigError, ModelConfig, to_batch
from training import train as train_module
from training.augment import val_pipeline
from training.dataset import LANDMARK_COLUMNS, SOURCES, CropDataset, PreparedDataError, read_crop, read_prepared
from training.dropout import LEFT_EYE, LEFT_MOUTH, NOSE, RIGHT_EYE, RIGHT_MOUTH, face_axes
from training.selfblend import BLEND_RATIOS, REGIONS, SelfBlend
from training.config import DataConfig, RunConfig, TrainConfig, load_config
from training.train import main

CONFIG = ModelConfig("mobilenetv3_small_050", 64)
CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.fixture(scope="module")
def real_crops(prepared_dir):
    """``(image, landmarks)`` of every real crop of the prepared sample (two originals, two frames each)."""
    table = read_prepared(prepared_dir)
    reals = table[table["label"] == 0]
    assert len(reals) >= 4
    return [(read_crop(prepared_dir / row["crop"]), row[list(LANDMARK_COLUMNS)].to_numpy(float).reshape(5, 2))
            for _, row in reals.iterrows()]


def cases(real_crops):
    """Every real crop under every region, each with its own seed."""
    return [(image, landmarks, region, np.random.default_rng(i))
            for i, ((image, landmarks), region) in enumerate((c, r) for c in real_crops for r in REGIONS)]


# --- the generator -----------------------------------------------------------------------------


def test_pseudo_fakes_are_deterministic_under_a_seed(real_crops):
    image, landmarks = real_crops[0]
    first, again, other = (SelfBlend()(image, landmarks, np.random.default_rng(seed)) for seed in (7, 7, 8))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_size_dtype_and_mask_range_are_kept(real_crops):
    for image, landmarks, region, rng in cases(real_crops):
        fake, mask = SelfBlend()(image, landmarks, rng, region)
        assert fake.shape == image.shape and fake.dtype == np.uint8
        assert mask.shape == image.shape[:2] and mask.dtype == np.float32
        assert mask.min() == 0 and float(mask.max()) == pytest.approx(min(BLEND_RATIOS, key=lambda r: abs(r - mask.max())))


def test_pixels_change_only_where_the_mask_is_and_the_mask_is_the_changed_area(real_crops):
    for image, landmarks, region, rng in cases(real_crops):
        fake, mask = SelfBlend()(image, landmarks, rng, region)
        changed = (fake != image).any(axis=-1)
        assert not (changed & (mask == 0)).any(), f"{region}: pixels changed outside the blend mask"
        weighty = mask >= 0.1
        assert weighty.sum() > 0.01 * mask.size
        assert (changed & weighty).sum() >= 0.9 * weighty.sum(), f"{region}: the mask claims unchanged pixels"
        # and the blend is the mask's weighted mean of the crop and a changed copy of it
        inside = mask >= 0.5 * mask.max()
        assert np.abs(fake[inside].astype(int) - image[inside]).mean() > 1.0, region


def _centre(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.indices(mask.shape)
    return np.array([(xs * mask).sum(), (ys * mask).sum()]) / mask.sum()


def test_masks_lie_on_their_face_part(real_crops):
    for image, landmarks, region, rng in cases(real_crops):
        _, mask = SelfBlend()(image, landmarks, rng, region)
        eyes = (landmarks[LEFT_EYE] + landmarks[RIGHT_EYE]) / 2
        expected = {"face": face_axes(landmarks)[0], "eyes": eyes,
                    "mouth": (landmarks[LEFT_MOUTH] + landmarks[RIGHT_MOUTH]) / 2,
                    "nose": (landmarks[NOSE] + eyes) / 2}[region]
        eye_distance = np.linalg.norm(landmarks[RIGHT_EYE] - landmarks[LEFT_EYE])
        assert np.linalg.norm(_centre(mask) - expected) < 0.3 * eye_distance, region
        corners = mask[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert (corners == 0).all(), f"{region}: the mask reaches the crop's corners"


def test_part_masks_are_smaller_than_face_masks(real_crops):
    image, landmarks = real_crops[0]
    area = {parts: np.mean([(SelfBlend(parts=parts).mask(image.shape, landmarks, np.random.default_rng(i)) > 0).mean()
                            for i in range(12)]) for parts in (0.0, 1.0)}
    assert area[1.0] < 0.5 * area[0.0]


def test_a_face_outside_the_crop_blends_nothing(real_crops):
    image, landmarks = real_crops[0]
    fake, mask = SelfBlend()(image, landmarks - 5 * image.shape[0], np.random.default_rng(0), "eyes")
    assert not mask.any() and np.array_equal(fake, image)


@pytest.mark.parametrize("settings", [{"parts": 1.5}, {"shift": -0.1}, {"blur": (0.2, 0.1)}, {"blur": (0, 0.1)}])
def test_impossible_settings_are_refused(settings):
    with pytest.raises(ValueError, match="SelfBlend"):
        SelfBlend(**settings)


# --- the training mix --------------------------------------------------------------------------


def test_epochs_draw_real_fake_and_pseudo_crops_in_the_mix_shares(prepared_dir):
    dataset = CropDataset(prepared_dir, CONFIG, train=True, mix={"real": 0.5, "fake": 0.25, "pseudo": 0.25})
    labels = dataset.table["label"].to_numpy()
    reals, fakes = int((labels == 0).sum()), int((labels == 1).sum())
    length = min(2 * reals, 4 * fakes, 4 * reals)
    orders = set()
    for epoch in range(3):
        dataset.set_epoch(epoch)
        counts = {source: int((dataset.sources == SOURCES.index(source)).sum()) for source in SOURCES}
        assert counts == {"real": length // 2, "fake": length // 4, "pseudo": length // 4}
        for source, label in (("real", 0), ("fake", 1), ("pseudo", 0)):
            drawn = dataset.order[dataset.sources == SOURCES.index(source)]
            assert (labels[drawn] == label).all() and len(set(drawn)) == len(drawn), source
        orders.add((tuple(dataset.order), tuple(dataset.sources)))
    assert len(orders) == 3


def test_pseudo_samples_are_their_real_crop_self_blended(prepared_dir):
    dataset = CropDataset(prepared_dir, CONFIG, train=True, dropout=None, pipeline=val_pipeline(64),
                          mix={"real": 0.5, "pseudo": 0.5}, seed=4)
    dataset.set_epoch(2)
    seen = set()
    for index in range(len(dataset)):
        item, position = dataset[index], int(dataset.order[index])
        crop = read_crop(prepared_dir / dataset.table["crop"][position])
        source = SOURCES[dataset.sources[index]]
        seen.add(source)
        assert item["source"] == source and item["target"].item() == (source == "pseudo")
        if source == "pseudo":
            landmarks = dataset.table.loc[position, list(LANDMARK_COLUMNS)].to_numpy(np.float32).reshape(5, 2)
            fake, _ = SelfBlend()(crop, landmarks, np.random.default_rng((4, 2, index)))
            assert torch.equal(item["image"], to_batch([fake], CONFIG)[0])
            assert not torch.equal(item["image"], to_batch([crop], CONFIG)[0])
        else:
            assert torch.equal(item["image"], to_batch([crop], CONFIG)[0])
    assert seen == {"real", "pseudo"}


def test_a_crop_whose_face_is_outside_it_stays_real(prepared_dir, tmp_path):
    data = shutil.copytree(prepared_dir, tmp_path / "prepared")
    crops = pd.read_csv(data / "crops.csv", dtype=str, keep_default_na=False)
    moved = crops.index[crops["label"] == "0"][0]
    crops.loc[moved, list(LANDMARK_COLUMNS)] = "-5000"
    crops.to_csv(data / "crops.csv", index=False)
    dataset = CropDataset(data, CONFIG, train=True, mix={"pseudo": 1.0})
    index = list(dataset.order).index(moved)
    assert SOURCES[dataset.sources[index]] == "pseudo"
    item = dataset[index]
    assert (item["source"], item["target"].item()) == ("real", 0.0)
    assert {dataset[i]["source"] for i in range(len(dataset)) if i != index} == {"pseudo"}


def reals_only(prepared_dir, folder):
    """A copy of the prepared sample without its fake videos: two originals, one per fold."""
    data = shutil.copytree(prepared_dir, folder)
    for name in ("crops.csv", "videos.csv"):
        table = pd.read_csv(data / name, dtype=str, keep_default_na=False)
        table[table["label"] == "0"].to_csv(data / name, index=False)
    return data


@pytest.mark.parametrize("options, error, message", [
    ({"train": True}, PreparedDataError, r"cannot draw fake crops: 4 real, 0 fake, 4 real with landmarks"),
    ({"train": True, "mix": {"real": 1, "fakes": 1}}, ValueError, r"mix: shares of"),
    ({"train": True, "mix": {"real": 1, "pseudo": -1}}, ValueError, r"mix: shares of"),
    ({"train": True, "balance": False, "mix": {"real": 1, "pseudo": 1}}, ValueError, "balanced training epochs only"),
    ({"mix": {"real": 1, "pseudo": 1}}, ValueError, "balanced training epochs only"),
], ids=["fakes from reals only", "unknown source", "negative share", "unbalanced", "validation"])
def test_mixes_that_cannot_be_drawn_are_clear_errors(prepared_dir, tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        CropDataset(reals_only(prepared_dir, tmp_path / "reals"), CONFIG, **options)


@pytest.mark.parametrize("data, message", [
    ({"mix": {"real": 0.5, "pseudo": 0.5}, "balance": False}, "needs balance: true"),
    ({"mix": {"real": 0.5, "deepfakes": 0.5}}, "mix: shares of"),
    ({"selfblend": {"ratio": 0.5}}, r"selfblend: unknown key\(s\) \['ratio'\]"),
    ({"selfblend": {"parts": 2}}, "data config: SelfBlend: parts must be in"),
])
def test_data_configs_are_checked(data, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig.from_dict(data)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_training_run_on_real_videos_alone_learns_from_both_classes(prepared_dir, tmp_path, monkeypatch):
    """The run trains on its real crops and on those crops self-blended: each pseudo-fake it sees is
    the blend the generator made (not the crop it started from), labelled fake."""
    data = reals_only(prepared_dir, tmp_path / "reals")
    train = TrainConfig(epochs=2, batch_size=2, iterations=2, optimizer="adamw", lr=1e-3, precision="fp32", workers=0)
    no_augmentation = dict.fromkeys(("cutout", "compression", "noise", "blur", "flip", "color", "gray", "affine"), 0.0)
    config = RunConfig(CONFIG, train, DataConfig(mix={"real": 0.5, "pseudo": 0.5}, dropout=None, augment=no_augmentation))
    (tmp_path / "reals.json").write_text(json.dumps(config.to_dict()))
    blends, seen = [], []  # what the generator made (in order), and every sample the run trained on
    generate, epoch = SelfBlend.__call__, train_module.train_one_epoch

    def recording_generator(self, image, *args, **kwargs):
        fake, mask = generate(self, image, *args, **kwargs)
        if mask.any():
            blends.append((image, fake))
        return fake, mask

    def recording_epoch(model, batches, *args, **kwargs):
        return epoch(model, (seen.append(b) or b for b in batches), *args, **kwargs)

    monkeypatch.setattr(SelfBlend, "__call__", recording_generator)
    monkeypatch.setattr(train_module, "train_one_epoch", recording_epoch)
    out = tmp_path / "run"
    assert main(["--config", str(tmp_path / "reals.json"), "--data", str(data), "--fold", "0", "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 2 and (metrics.train_fake_share == 0.5).all()  # one real and one pseudo-fake per pass
    assert metrics.val_auc.isna().all() and metrics.val_logloss_fake.isna().all()  # real videos validate
    assert np.isfinite(metrics.val_logloss_real).all()
    assert json.loads((out / "config.json").read_text())["data"]["mix"] == {"real": 0.5, "pseudo": 0.5}
    pseudo = [(b["image"][i], b["target"][i]) for b in seen for i in range(len(b["source"])) if b["source"][i] == "pseudo"]
    assert len(pseudo) == len(blends) == 4
    for (image, target), (crop, fake) in zip(pseudo, blends, strict=True):
        fake, crop = to_batch([fake, crop], CONFIG)
        changed = (fake - crop).abs() > 0.2  # where the blend changed the crop (the resize's own noise is less)
        to_fake, to_crop = ((image - x)[changed].abs().mean() for x in (fake, crop))
        assert target > 0.5 and changed.sum() > 50 and to_fake < 0.75 * to_crop, (to_fake, to_crop)


# --- the shipped comparison ----------------------------------------------------------------------


@pytest.mark.parametrize("name, mix, map_head", [
    ("fakes", {"real": 0.5, "fake": 0.5, "pseudo": 0.0}, False),
    ("pseudo", {"real": 0.5, "fake": 0.0, "pseudo": 0.5}, False),
    ("both", {"real": 0.5, "fake": 0.25, "pseudo": 0.25}, False),
    ("pseudo_map", {"real": 0.5, "fake": 0.0, "pseudo": 0.5}, True),
    ("both_map", {"real": 0.5, "fake": 0.25, "pseudo": 0.25}, True),
])
def test_the_selfblend_variants_are_the_cpu_demo_recipe_but_for_the_mix(name, mix, map_head):
    """The variants compare data mixes at the same budget: everything else is the demo's recipe."""
    demo = load_config(CONFIGS / "cpu_demo.json").to_dict()
    variant = load_config(CONFIGS / "selfblend" / f"{name}.json").to_dict()
    assert demo["data"].pop("mix") == {"real": 0.5, "fake": 0.5, "pseudo": 0.0} and not demo["model"].pop("map_head")
    assert variant["data"].pop("mix") == mix and variant["model"].pop("map_head") is map_head
    assert variant == demo
