"""The model zoo and the checkpoint format: real timm encoders, exact round trips, loud mismatches."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
from torch import nn

from models.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from models.zoo import ConfigError, ModelConfig, build_model, to_batch
from training.config import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
TINY = ModelConfig("mobilenetv3_small_050", 64)


@pytest.fixture(scope="module")
def trained_tiny() -> nn.Module:
    """The tiny classifier with non-default batch-norm statistics (one forward pass in training mode)."""
    torch.manual_seed(0)
    model = build_model(TINY)
    model.train()(torch.randn(4, 3, 64, 64))
    return model.eval()


# --- the classifier ----------------------------------------------------------------------------


@pytest.mark.parametrize("encoder, size, width", [
    ("mobilenetv3_small_050", 64, 1024),  # pooled after its head convolution: not num_features (288)
    ("resnet10t", 64, 512),
    ("legacy_xception", 71, 2048),  # the Xception config's architecture
])
def test_the_classifier_gives_one_logit_per_image(encoder, size, width):
    model = build_model(ModelConfig(encoder, size)).eval()
    assert model.head.in_features == width
    with torch.no_grad():
        logits = model(torch.randn(3, 3, size, size))
    assert logits.shape == (3,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("values, message", [
    ({"encoder": "x", "input_size": 64, "size": 3}, r"unknown key\(s\) \['size'\]; valid keys are \['attention_block', 'drop_path_rate'"),
    ({"encoder": "x", "input_size": 0}, "input_size must be an int > 0"),
    ({"encoder": "x", "input_size": 64.0}, "input_size must be an int > 0"),
    ({"encoder": "x", "input_size": 64, "mean": [0.5, 0.5]}, "mean and std 3 values"),
    ({"encoder": "x", "input_size": 64, "std": [0.2, 0.0, 0.2]}, "std > 0"),
    ({"encoder": "x", "input_size": 64, "dropout": 1.0}, r"dropout and drop_path_rate in \[0, 1\)"),
])
def test_model_config_is_strict(values, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(values)


def test_model_config_round_trips_through_json():
    config = ModelConfig("legacy_xception.tf_in1k", 299, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.2, 0.0)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("config, message", [
    (ModelConfig("no_such_net", 64), "timm cannot build encoder 'no_such_net': timm .* has no such model"),
    (ModelConfig("mobilenetv3_small_050.no_such_tag", 64), "timm cannot build encoder .*Invalid pretrained tag"),
    (ModelConfig("legacy_xception", 64, drop_path_rate=0.2),
     "timm cannot build encoder 'legacy_xception'.*drop_path_rate"),
])
def test_unbuildable_encoders_are_named(config, message):
    with pytest.raises(ConfigError, match=message):
        build_model(config)


def test_to_batch_resizes_pads_and_normalises(data_dir):
    crop = cv2.cvtColor(cv2.imread(str(next((data_dir / "face_images").rglob("*.png")))), cv2.COLOR_BGR2RGB)
    wide = np.full((30, 60, 3), (255, 0, 128), np.uint8)  # 2:1 -> 64 x 32 content, padded top and bottom
    config = ModelConfig("x", 64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    batch = to_batch([crop, wide], config)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    mean, std = torch.tensor(config.mean), torch.tensor(config.std)
    assert torch.allclose(batch[1, :, 32, 32], (torch.tensor([1.0, 0.0, 128 / 255]) - mean) / std, atol=1e-6)
    assert torch.allclose(batch[1, :, 2, 32], -mean / std)  # zero padding, normalised
    assert to_batch([], config).shape == (0, 3, 64, 64)


# --- the shipped configs -----------------------------------------------------------------------


@pytest.mark.parametrize("name, encoder, size", [
    ("efficientnet_b7", "tf_efficientnet_b7.ns_jft_in1k", 380),
    ("xception", "legacy_xception.tf_in1k", 299),
    ("lite2/size260", "efficientnet_lite2", 260),
    ("cpu_demo", None, None),
])
def test_shipped_configs_name_timm_weights_and_their_normalisation(name, encoder, size):
    config = load_config(CONFIGS / f"{name}.json")
    if encoder:
        assert (config.model.encoder, config.model.input_size) == (encoder, size)
    else:
        assert 128 <= config.model.input_size <= 224 and config.train.precision != "fp16"
    pretrained = timm.models.get_pretrained_cfg(config.model.encoder)
    assert pretrained is not None, f"timm has no pretrained weights named {config.model.encoder}"
    assert config.model.mean == pytest.approx(pretrained.mean) and config.model.std == pytest.approx(pretrained.std)


def test_the_b7_config_is_the_winners_recipe():
    config = load_config(CONFIGS / "efficientnet_b7.json")
    train = config.train
    assert (train.optimizer, train.lr, train.momentum, train.nesterov) == ("sgd", 0.01, 0.9, True)
    assert train.weight_decay == 1e-4
    assert (train.schedule, train.poly_power, train.clip_grad_norm) == ("poly", 0.9, 1.0)
    assert (train.batch_size, train.iterations, train.epochs, train.pretrained) == (12, 2500, 40, True)
    assert config.model.drop_path_rate == 0.2 and config.data.clip_targets == 0.01
    assert train.precision == "auto"  # mixed precision on CUDA


# --- checkpoints -------------------------------------------------------------------------------


def test_a_checkpoint_round_trip_is_exact(trained_tiny, tmp_path):
    save_checkpoint(tmp_path / "model.pt", nn.DataParallel(trained_tiny), epoch=3, metrics={"val_logloss": 0.25})
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.config == trained_tiny.config and not loaded.training
    expected = trained_tiny.state_dict()
    assert loaded.state_dict().keys() == expected.keys()  # no "module." prefix from the wrapper
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(images), trained_tiny(images))
    payload = read_checkpoint(tmp_path / "model.pt")
    assert (payload["epoch"], payload["metrics"], payload["model"]) == (3, {"val_logloss": 0.25}, TINY.to_dict())


def test_a_channels_last_model_saves_plain_tensors(trained_tiny, tmp_path):
    model = build_model(TINY).to(memory_format=torch.channels_last)
    model.load_state_dict(trained_tiny.state_dict())
    save_checkpoint(tmp_path / "model.pt", model)
    weights = read_checkpoint(tmp_path / "model.pt")["state_dict"]
    assert all(v.is_contiguous() for v in weights.values())
    assert all(torch.equal(weights[k], v) for k, v in trained_tiny.state_dict().items())


def _edit_checkpoint(path: Path, edit) -> Path:
    payload = read_checkpoint(path)
    edit(payload)
    torch.save(payload, path)
    return path


def _rename_head(payload):
    payload["state_dict"] = {re.sub(r"^head\.", "classifier.", k): v for k, v in payload["state_dict"].items()}


@pytest.mark.parametrize("edit, message", [
    pytest.param(_rename_head, r"weights do not fit mobilenetv3_small_050: missing keys head\.bias, head\.weight; "
                 r"unexpected keys classifier\.bias, classifier\.weight \(saved by another architecture",
                 id="layers renamed by a timm upgrade"),
    pytest.param(lambda p: p["model"].update(encoder="mobilenetv3_small_075"),
                 r"weights do not fit mobilenetv3_small_075: other shapes: "
                 r"encoder\.\S+ \(8,\) in file vs \(16,\) in model, "
                 r".* and \d+ more", id="another width of the same family"),
    pytest.param(lambda p: p["model"].update(encoder="no_such_net"), "timm cannot build encoder 'no_such_net'",
                 id="an unknown encoder"),
    pytest.param(lambda p: p["model"].update(size=64), r"unknown key\(s\) \['size'\]",
                 id="a config key from elsewhere"),
])
def test_a_checkpoint_that_does_not_fit_its_model_fails_naming_the_keys(trained_tiny, tmp_path, edit, message):
    save_checkpoint(tmp_path / "model.pt", trained_tiny)
    path = _edit_checkpoint(tmp_path / "model.pt", edit)
    with pytest.raises(CheckpointError, match=message) as error:
        load_model(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_a_long_key_mismatch_is_shortened(trained_tiny, tmp_path):
    save_checkpoint(tmp_path / "model.pt", trained_tiny)
    path = _edit_checkpoint(tmp_path / "model.pt", lambda p: p.update(
        state_dict={"module." + k: v for k, v in p["state_dict"].items()}))
    count = len(trained_tiny.state_dict())
    message = rf"missing keys (\S+, ){{4}}\S+ and {count - 5} more; unexpected keys module\."
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")  # unpickling this creates the marker file


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"format": "deepfake-detector", "version": 1, "model": TINY.to_dict(), "state_dict": {},
                "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt: refused: the file holds \S*open, code that would run"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("write, message", [
    pytest.param(None, "no such checkpoint file", id="missing"),
    pytest.param(lambda p: p.write_bytes(b""), "not a readable checkpoint", id="empty"),
    pytest.param("truncate", "not a readable checkpoint", id="truncated"),
    pytest.param(lambda p: torch.save(build_model(TINY).state_dict(), p), "not a deepfake-detector checkpoint",
                 id="a bare state dict"),
    pytest.param(lambda p: torch.save({"format": "deepfake-detector", "version": 2}, p),
                 "format version 2, this code reads 1", id="a newer format"),
    pytest.param(lambda p: torch.save({"format": "deepfake-detector", "version": 1, "model": {}}, p),
                 "lacks its 'state_dict' entry", id="no weights"),
])
def test_unreadable_checkpoints_fail_with_one_line_naming_the_file(trained_tiny, tmp_path, write, message):
    path = tmp_path / "model.pt"
    if write == "truncate":
        save_checkpoint(path, trained_tiny)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif write:
        write(path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_model(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


# --- pretrained weights from a local file ------------------------------------------------------


def test_pretrained_weights_load_from_a_local_timm_checkpoint(tmp_path):
    torch.manual_seed(1)
    imagenet = timm.create_model("mobilenetv3_small_050", pretrained=False)  # as timm saves them: with a classifier
    torch.save(imagenet.state_dict(), tmp_path / "weights.pth")
    model = build_model(TINY, pretrained_file=tmp_path / "weights.pth")
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, imagenet.state_dict()[key]), key


#: What goes wrong with pretrained weights, and the message that must say so.
PRETRAINED_FAILURES = {
    "another architecture": r"pretrained weights .*weights.pth do not fit encoder 'mobilenetv3_small_050'",
    "missing": r"weights.pth: no such pretrained weights file",
    "runs code": r"cannot load pretrained weights .*weights.pth for 'mobilenetv3_small_050'",
    "offline hub": r"cannot load timm's pretrained weights for 'mobilenetv3_small_050.lamb_in1k'.*--pretrained-file",
}


@pytest.mark.parametrize("case", PRETRAINED_FAILURES)
def test_unusable_pretrained_weights_are_reported(tmp_path, case):
    path = tmp_path / "weights.pth"
    if case == "another architecture":
        torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), path)
    elif case == "runs code":
        torch.save({"conv_stem.weight": _RunsCode(tmp_path / "code_ran")}, path)
    with pytest.raises(ConfigError, match=PRETRAINED_FAILURES[case]):
        if case == "offline hub":  # the suite runs with HF_HUB_OFFLINE=1 (tests/conftest.py)
            build_model(ModelConfig("mobilenetv3_small_050.lamb_in1k", 64), pretrained=True)
        else:
            build_model(TINY, pretrained_file=path)
    assert not (tmp_path / "code_ran").exists()


def test_an_attention_gate_on_a_block_the_encoder_lacks_is_a_config_error():
    with pytest.raises(ConfigError, match="attention_block: no block 16: the encoder has 16 blocks"):
        build_model(ModelConfig("efficientnet_lite0", 64, attention_block=16))
    gated = build_model(ModelConfig("efficientnet_lite0", 64, attention_block=15))
    assert gated.attention.conv.in_channels == 320 and "attention.conv.weight" in gated.state_dict()
