"""DeepfakeMAE stage 1: part masks cover their part, the encoder sees only visible patches, the
autoencoder learns real faces, and its encoder loads into the classifier strictly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.precision import Precision
from models.zoo import ConfigError, ModelConfig, build_model
from training import pretrain_mae
from training.dataset import read_crop
from training.mae import MaskedAutoencoder, patchify, unpatchify
from training.partmask import PART_REGIONS, PARTS, fill_mask, part_patches
from training.pretrain_mae import RealFaces, main
from training.config import TrainConfig, load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs" / "mae"
VIT = ModelConfig("test_vit", 64)  # 4 x 4 patches of 16 px
#: The landmarks each part must cover (MTCNN order: eyes, nose, mouth corners).
PART_LANDMARKS = {"eyes": [0, 1], "nose_cheeks": [2], "lips": [3, 4]}


@pytest.fixture(scope="module")
def faces(prepared_dir):
    """The real crops of the prepared fixture with landmarks, as pretraining sees them (no flips)."""
    return RealFaces(prepared_dir, VIT, patch=16, flip=0.0)


def scaled(landmarks, shape, size):
    """Crop-pixel landmarks moved as :func:`preprocessing.geometry.resize_and_pad` moves the crop."""
    scale = size / max(shape[:2])
    offset = (np.array([size, size]) - np.round(np.array([shape[1], shape[0]]) * scale)) // 2
    return np.asarray(landmarks) * scale + offset


@pytest.mark.parametrize("part", PARTS)
def test_part_covers_its_landmarks_and_their_patches_not_the_others(faces, part):
    for crop, landmarks in zip(faces.crops, faces.landmarks):
        shape = read_crop(faces.root / crop).shape
        region = PART_REGIONS[part](shape, landmarks)
        for i, (x, y) in enumerate(np.rint(landmarks).astype(int)):
            assert region[y, x] == (i in PART_LANDMARKS[part]), (crop, part, i)
        patches = part_patches(shape, landmarks, part, VIT.input_size, 16)
        for x, y in scaled(landmarks, shape, VIT.input_size)[PART_LANDMARKS[part]]:
            assert patches[int(y // 16) * 4 + int(x // 16)], (crop, part)
    assert len(faces.crops) >= 4


def test_samples_draw_every_part_and_flip_their_mask_with_the_face(prepared_dir, faces):
    flipped = RealFaces(prepared_dir, VIT, patch=16, flip=1.0)
    parts = set()
    for epoch, i in ((epoch, i) for epoch in range(3) for i in range(len(faces))):
        faces.set_epoch(epoch)
        flipped.set_epoch(epoch)
        plain, mirrored = faces[i], flipped[i]
        assert plain["part"] == mirrored["part"]
        parts.add(plain["part"])
        assert torch.equal(mirrored["image"], plain["image"].flip(-1))
        assert torch.equal(mirrored["part_patches"].reshape(4, 4), plain["part_patches"].reshape(4, 4).flip(-1))
    assert parts == set(range(len(PARTS)))
    faces.set_epoch(0)


def test_fill_mask_keeps_the_part_and_masks_equal_counts():
    parts = torch.zeros(3, 16, dtype=torch.bool)
    parts[0, [1, 2]] = True
    parts[1, :10] = True  # more than the ratio asks: every row masks 10
    mask = fill_mask(parts, 0.25, torch.Generator().manual_seed(0))
    assert (mask[parts]).all()
    assert mask.sum(1).tolist() == [10, 10, 10]
    with pytest.raises(ValueError, match="nothing to see"):
        fill_mask(torch.ones(1, 4, dtype=torch.bool), 0.5)


def test_patchify_round_trip():
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(unpatchify(patchify(images, 16), 16, 64), images)
    assert torch.equal(patchify(images, 16)[0, 5].reshape(16, 16, 3).permute(2, 0, 1), images[0, :, 16:32, 16:32])


def test_the_encoder_never_sees_a_masked_patch():
    torch.manual_seed(0)
    model = MaskedAutoencoder(VIT, decoder_width=32, decoder_depth=1).eval()
    images = torch.randn(2, 3, 64, 64)
    mask = fill_mask(torch.zeros(2, 16, dtype=torch.bool), 0.75, torch.Generator().manual_seed(1))
    counts = []
    model.encoder.blocks[0].register_forward_pre_hook(lambda _, args: counts.append(args[0].shape[1]))
    with torch.no_grad():
        before = model.encode(images, mask)
        changed = images + 5 * unpatchify(mask[..., None].float().expand(-1, -1, 16 * 16 * 3), 16, 64)
        after = model.encode(changed, mask)
    assert counts == [1 + 4, 1 + 4]  # the class token and the 4 visible patches of 16
    assert torch.allclose(before, after)  # scribbling over the masked patches changes nothing


def test_reconstruction_learns_real_faces(faces):
    """On the fixture's real crops the loss falls well below its start, and masked eyes come back
    closer to the truth than the mean face (the best guess of a model blind to the visible patches)."""
    torch.manual_seed(0)
    model = MaskedAutoencoder(VIT, decoder_width=64, decoder_depth=1)
    samples = [faces[i] for i in range(len(faces))]
    images = torch.stack([s["image"] for s in samples])
    parts = torch.stack([s["part_patches"] for s in samples])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        mask = fill_mask(parts, 0.25, generator)
        loss = model.loss(images, model(images, mask), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.25 * losses[0]
    eyes = torch.stack([torch.from_numpy(part_patches(read_crop(faces.root / faces.crops[int(faces.order[i])]).shape,
                                                      faces.landmarks[int(faces.order[i])], "eyes", 64, 16))
                        for i in range(len(faces))])
    mask = fill_mask(eyes, 0.25, generator)
    with torch.no_grad():
        predicted = model.eval()(images, mask)
    truth = patchify(images, 16)
    mean_face = patchify(images.mean(0, keepdim=True), 16).expand_as(truth)
    on_eyes = eyes[..., None].float()
    assert ((predicted - truth) ** 2 * on_eyes).sum() < ((mean_face - truth) ** 2 * on_eyes).sum()


def test_pretraining_writes_an_encoder_the_classifier_loads_strictly(prepared_dir, tmp_path):
    config = {"model": VIT.to_dict(), "pretrain": {"epochs": 1, "batch_size": 2, "iterations": 2,
                                                    "decoder_width": 32, "decoder_depth": 1}}
    (tmp_path / "mae.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    assert main(["--config", str(tmp_path / "mae.json"), "--data", str(prepared_dir), "--out", str(out)]) == 0
    for name in ("config.json", "last.pt", "encoder.pth", "metrics.csv", "loss.png", "recon_epoch000.png"):
        assert (out / name).is_file(), name
    assert main(["--config", str(tmp_path / "mae.json"), "--data", str(prepared_dir), "--out", str(out)]) == 2
    assert main(["--config", str(tmp_path / "mae.json"), "--data", str(prepared_dir), "--out", str(out),
                 "--resume"]) == 0  # finished: nothing to do
    encoder = torch.load(out / "encoder.pth", weights_only=True)
    classifier = build_model(VIT, pretrained_file=out / "encoder.pth")
    for key, value in classifier.encoder.state_dict().items():
        assert torch.equal(value, encoder[key]), key
    del encoder["blocks.0.norm1.weight"]
    encoder["decoder.extra"] = torch.zeros(1)
    torch.save(encoder, tmp_path / "broken.pth")
    with pytest.raises(ConfigError, match=r"do not fit encoder 'test_vit': missing keys blocks.0.norm1.weight; "
                                          r"unexpected keys decoder.extra"):
        build_model(VIT, pretrained_file=tmp_path / "broken.pth")


def test_fine_tuning_configs_share_everything_but_the_initialisation():
    random, mae = (load_config(CONFIGS / f"vit_{name}.json") for name in ("random", "mae"))
    assert random.model == mae.model and random.data == mae.data
    assert mae.train.pretrained_file and random.train.pretrained_file is None
    assert {**random.train.to_dict(), "pretrained_file": None} == {**mae.train.to_dict(), "pretrained_file": None}


def test_a_config_sets_one_initialisation():
    with pytest.raises(ConfigError, match="pretrained and pretrained_file: set one, not both"):
        TrainConfig(epochs=1, batch_size=1, pretrained="efficientnet_lite0", pretrained_file="encoder.pth")


@pytest.mark.usefixtures("cpu_only")  # bit for bit: CUDA kernels need not be deterministic
def test_a_run_cut_off_resumes_to_the_same_weights_its_optimizer_state_on_the_models_device(prepared_dir, tmp_path,
                                                                                             monkeypatch):
    config = {"model": VIT.to_dict(), "pretrain": {"epochs": 2, "batch_size": 2, "iterations": 2,
                                                    "decoder_width": 32, "decoder_depth": 1}}
    (tmp_path / "mae.json").write_text(json.dumps(config))
    args = ["--config", str(tmp_path / "mae.json"), "--data", str(prepared_dir), "--out"]
    assert main(args + [str(tmp_path / "whole")]) == 0
    plot = pretrain_mae._plot_loss

    def cut_off(path, history):
        plot(path, history)
        if len(history) == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pretrain_mae, "_plot_loss", cut_off)
        with pytest.raises(KeyboardInterrupt):
            main(args + [str(tmp_path / "cut")])
    moves = []  # the resumed optimizer's state follows its parameters: they must be on the device first
    for cls, method in ((Precision, "model"), (torch.optim.AdamW, "load_state_dict")):
        monkeypatch.setattr(cls, method, lambda *a, _run=getattr(cls, method), _name=method: moves.append(_name) or _run(*a))
    assert main(args + [str(tmp_path / "cut"), "--resume"]) == 0
    assert moves == ["model", "load_state_dict"]  # the model moved to the device, then the optimizer's state
    whole, resumed = (torch.load(tmp_path / run / "encoder.pth", weights_only=True) for run in ("whole", "cut"))
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
