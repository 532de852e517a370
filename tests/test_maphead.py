"""The map head: a decoder beside the classifier that learns where a crop was manipulated, from the
difference masks of fakes and the blend masks of pseudo-fakes; its loss, its masks, its training and
its strip in the report."""
import dataclasses
import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kernels import plots, report
from kernels.api import load_ensemble
from kernels.gradcam import manipulation_map
from models.checkpoint import load_model, save_checkpoint
from models.zoo import ModelConfig, build_model, to_batch
from preprocessing.geometry import resize_and_pad
from training.augment import train_pipeline, val_pipeline
from training.dataset import LANDMARK_COLUMNS, SOURCES, CropDataset, read_crop, read_mask
from training.engine import map_loss
from training.selfblend import SelfBlend
from training.config import DataConfig, RunConfig, TrainConfig
from training.train import _seed, fit, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MAPPED = ModelConfig("mobilenetv3_small_050", 64, map_head=True)
NO_AUGMENTATION = {"train": True, "dropout": None, "pipeline": val_pipeline(64)}


def test_the_map_head_leaves_the_classifier_alone_and_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(MAPPED).eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, maps = model(images, with_map=True)
        assert torch.allclose(logits, model(images), atol=1e-6)
    assert maps.shape == (3, 1, 16, 16)
    save_checkpoint(tmp_path / "mapped.pt", model)
    loaded = load_model(tmp_path / "mapped.pt")
    with torch.no_grad():
        assert torch.equal(loaded(images, with_map=True)[1], maps)
    with pytest.raises(ValueError, match="no map head"):
        build_model(ModelConfig("mobilenetv3_small_050", 64))(images, with_map=True)


def test_map_loss_is_pixel_bce_over_the_known_masks():
    torch.manual_seed(0)
    logits, masks = torch.randn(3, 1, 4, 4), torch.rand(3, 16, 16)
    known = torch.tensor([True, False, True])
    targets = F.avg_pool2d(masks[:, None], 4)
    expected = torch.stack([F.binary_cross_entropy_with_logits(logits[i], targets[i]) for i in (0, 2)]).mean()
    assert map_loss(logits, masks, known).item() == pytest.approx(expected.item(), rel=1e-5)
    other = masks.clone()
    other[1] = 1 - other[1]
    assert map_loss(logits, other, known).item() == pytest.approx(expected.item(), rel=1e-5)
    assert map_loss(logits, masks, torch.zeros(3, dtype=torch.bool)).item() == 0


def _resized(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(resize_and_pad(mask, 64, cv2.INTER_NEAREST, cv2.INTER_NEAREST)).float() / 255


def test_samples_carry_difference_masks_and_know_when_they_have_none(prepared_dir, tmp_path):
    data = shutil.copytree(prepared_dir, tmp_path / "prepared")
    crops = pd.read_csv(data / "crops.csv", dtype=str, keep_default_na=False)
    maskless = crops.index[crops["mask"] != ""][0]
    crops.loc[maskless, ["mask", "real_crop"]] = ""
    crops.to_csv(data / "crops.csv", index=False)
    masks = pd.read_csv(prepared_dir / "crops.csv", dtype=str, keep_default_na=False)["mask"]
    dataset = CropDataset(data, MAPPED, balance=False, **NO_AUGMENTATION)
    kinds = set()
    for index in range(len(dataset)):
        item, row = dataset[index], dataset.table.iloc[index]
        if row["label"] == 0:
            kind = "real"
            assert item["mask_known"] and not item["mask"].any()
        elif index == maskless:
            kind = "fake without mask"
            assert not item["mask_known"] and not item["mask"].any()
        else:
            kind = "fake"
            mask = read_mask(prepared_dir / masks[index], read_crop(data / row["crop"]).shape)
            assert item["mask_known"] and torch.equal(item["mask"], _resized(mask)) and item["mask"].max() > 0.5
        kinds.add(kind)
    assert kinds == {"real", "fake", "fake without mask"}


def test_a_flip_moves_the_mask_with_the_image(prepared_dir):
    off = {name: 0.0 for name in ("cutout", "compression", "noise", "blur", "color", "gray", "affine")}
    plain = CropDataset(prepared_dir, MAPPED, train=True, dropout=None, balance=False,
                        pipeline=train_pipeline(64, flip=0.0, **off))
    flipped = CropDataset(prepared_dir, MAPPED, train=True, dropout=None, balance=False,
                          pipeline=train_pipeline(64, flip=1.0, **off))
    fake = int(np.flatnonzero(plain.table["mask"] != "")[0])
    mask, moved = plain[fake]["mask"], flipped[fake]["mask"]
    assert flipped[fake]["image"].equal(plain[fake]["image"].flip(-1))
    # equal up to nearest-neighbour resizing, which rounds towards one side: a one-pixel shift
    assert min((moved - mask.flip(-1).roll(shift, -1)).abs().max() for shift in (-1, 0, 1)) == 0
    assert (moved - mask).abs().mean() > 0.05


def test_pseudo_fakes_carry_their_blend_mask(prepared_dir):
    dataset = CropDataset(prepared_dir, MAPPED, mix={"pseudo": 1.0}, seed=2, **NO_AUGMENTATION)
    for index in range(len(dataset)):
        item, position = dataset[index], int(dataset.order[index])
        assert SOURCES[dataset.sources[index]] == "pseudo" and item["mask_known"]
        landmarks = dataset.table.loc[position, list(LANDMARK_COLUMNS)].to_numpy(np.float32).reshape(5, 2)
        crop = read_crop(prepared_dir / dataset.table["crop"][position])
        _, blend = SelfBlend()(crop, landmarks, np.random.default_rng((2, 0, index)))
        assert torch.equal(item["mask"], _resized(np.rint(blend * 255).astype(np.uint8)))


def test_the_map_head_learns_where_pseudo_fakes_were_blended(prepared_dir):
    dataset = CropDataset(prepared_dir, MAPPED, mix={"real": 0.5, "pseudo": 0.5}, seed=1, **NO_AUGMENTATION)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    assert set(batch["target"].tolist()) == {0.0, 1.0}
    torch.manual_seed(0)
    model = build_model(MAPPED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        model.train()
        _, maps = model(batch["image"], with_map=True)
        loss = map_loss(maps, batch["mask"], batch["mask_known"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        predicted = torch.sigmoid(F.interpolate(model(batch["image"], with_map=True)[1], size=(64, 64)))[:, 0]
    inside = batch["mask"] > 0.5
    assert predicted[inside].mean() > predicted[~inside].mean() + 0.3


def test_map_weight_scales_the_map_loss_in_the_training_loss(prepared_dir, tmp_path):
    """One step from the same weights on the same batch: the training loss is the classifier's
    balanced BCE plus ``map_weight`` times the map loss, and with weight 0 the decoder learns nothing."""
    train_set = CropDataset(prepared_dir, MAPPED, mix={"real": 0.5, "pseudo": 0.5}, seed=1, **NO_AUGMENTATION)
    val_set = CropDataset(prepared_dir, MAPPED, 0)
    train = TrainConfig(epochs=1, batch_size=4, iterations=1, optimizer="sgd", lr=0.1, weight_decay=0.0,
                        schedule="constant", precision="fp32", workers=0)
    runs = {weight: fit(MAPPED, dataclasses.replace(train, map_weight=weight), train_set, val_set, tmp_path / str(weight))
            for weight in (0.0, 2.0)}
    first, second = (runs[w].history[0] for w in (0.0, 2.0))
    assert second["train_map_loss"] > 0.1
    assert first["train_map_loss"] == pytest.approx(second["train_map_loss"], abs=1e-6)  # the same forward pass
    assert second["train_loss"] - first["train_loss"] == pytest.approx(2.0 * second["train_map_loss"], abs=1e-5)
    _seed(train.seed, 0, 0)  # as fit seeds the model it builds
    initial = dict(build_model(MAPPED).decoder.named_parameters())
    for weight, run in runs.items():
        moved = [k for k, v in run.model.decoder.named_parameters() if not torch.equal(v, initial[k])]
        assert bool(moved) == (weight > 0), (weight, moved)


def test_training_writes_the_map_loss_and_the_report_shows_the_map(prepared_dir, demo_scores, tmp_path):
    train = TrainConfig(epochs=1, batch_size=2, iterations=2, optimizer="adamw", lr=1e-3, precision="fp32",
                        workers=0, map_weight=0.5)
    config = RunConfig(MAPPED, train, DataConfig(mix={"real": 0.5, "fake": 0.25, "pseudo": 0.25}))
    (tmp_path / "mapped.json").write_text(json.dumps(config.to_dict()))
    out = tmp_path / "run"
    assert main(["--config", str(tmp_path / "mapped.json"), "--data", str(prepared_dir), "--fold", "0",
                 "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.train_map_loss.between(0.01, 5).all()
    model = load_model(out / "best.pt")
    assert model.decoder is not None
    scores = demo_scores[0]
    frames = scores.frames[scores.frames["filename"] == scores.videos["filename"].iloc[0]]
    crops = [np.asarray(c) for c in frames["crop"]]
    maps, probs = manipulation_map(model, crops)
    assert all(m.shape == c.shape[:2] and 0 <= m.min() <= m.max() <= 1 for m, c in zip(maps, crops))
    with torch.no_grad():
        expected = torch.sigmoid(model(to_batch(crops, MAPPED))).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert plots.crop_strip(frames, model=model, view="map").axes  # drawable
    page = report.render(scores, ensemble=load_ensemble([out / "best.pt"], precision="fp32"))
    shown = [f"{v} map best" in page for v in scores.videos["filename"] if v != "broken.mp4"]
    assert shown and all(shown) and "Manipulation map of best" in page
