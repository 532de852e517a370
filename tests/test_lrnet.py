"""LRNet, the sequence-model family: the authors' published pairs converted exactly, refused by key
when their layout differs, saved and loaded as a checkpoint family of its own."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kernels import calibrate
from kernels.inputs import default_weights
from models.calibration import Calibration
from models.checkpoint import CheckpointError, export_checkpoint, load_model, read_checkpoint, save_checkpoint
from models.lrnet import LRNet, LRNetConfig
from preprocessing.landmarks import LandmarkSpec
from tests.conftest import DEMO_WEIGHTS
from training import convert

REPO = Path(__file__).resolve().parents[1]
#: Their folder -> our shipped checkpoint.
PAIRS = {"ffpp": "lrnet_ffpp", "deeperforensics": "lrnet_dfo"}
DEMOS = ("dfo_fake", "dfo_real", "ff_fake", "ff_real")


@pytest.fixture(scope="module")
def converted(lrnet_dir, tmp_path_factory) -> dict[str, Path]:
    """Each published pair converted by the command line, as weights/README.md says."""
    out = tmp_path_factory.mktemp("lrnet")
    for pair in PAIRS:
        argv = ["--format", "lrnet", "--out", str(out / f"{pair}.pt"), *(str(lrnet_dir / pair / f"g{i}.pth") for i in (1, 2))]
        assert convert.main(argv) == 0
    return {pair: out / f"{pair}.pt" for pair in PAIRS}


def authors_blocks(sequence: np.ndarray, block: int = 30) -> int:
    """How many blocks their demo/classify.py cuts: starts 0, block, ... below ``len - block``."""
    return len(range(0, len(sequence) - block, block))


@pytest.mark.parametrize("pair", PAIRS)
def test_the_converted_pairs_reproduce_the_authors_outputs_on_their_landmarks(converted, lrnet_dir, pair):
    reference = json.loads((lrnet_dir / "reference_outputs.json").read_text())
    model = load_model(converted[pair], family="sequence")
    for demo in DEMOS:
        expected = reference[f"{pair}/{demo}.txt"]
        sequence = np.loadtxt(lrnet_dir / "demo_landmarks" / f"{demo}.txt")
        blocks = model.blocks(sequence)
        assert len(blocks) == authors_blocks(sequence) == expected["x_shape"][0]
        with torch.inference_mode():
            branches = model.branch_probs(blocks).numpy()
            mix = model(blocks).numpy()
        np.testing.assert_allclose(branches[:, 0], expected["g1_p_fake"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(branches[:, 1], expected["g2_p_fake"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(mix, expected["block_mix"], rtol=0, atol=1e-5)
        assert np.mean(mix >= 0.5) == expected["video_vote"]  # their video score: the share of fake blocks


@pytest.mark.parametrize("pair", PAIRS)
def test_the_shipped_checkpoints_are_the_published_pairs_converted(converted, pair):
    shipped = read_checkpoint(REPO / "weights" / f"{PAIRS[pair]}.pt", family="sequence")
    made = read_checkpoint(converted[pair])
    assert shipped["source"] == {"format": "lrnet", "architecture": "LRNet", "files": [f"{pair}/g1.pth", f"{pair}/g2.pth"]}
    assert shipped["landmark_spec"] == made["landmark_spec"] == LandmarkSpec().to_dict() == {
        "detector": "dlib68", "calibrate": True, "normalisation": "lrnet_crop", "crop_size": 400, "face_scale": 1.2}
    assert shipped["state_dict"].keys() == made["state_dict"].keys()
    for key, value in made["state_dict"].items():
        assert torch.equal(shipped["state_dict"][key], value), key


@pytest.mark.parametrize("damage, named", [
    (lambda sd: sd.pop("gru.weight_hh_l0_reverse"), "missing keys gru.weight_hh_l0_reverse"),
    (lambda sd: sd.update({"gru.bias_ih_l0": torch.zeros(64)}), "other shapes: gru.bias_ih_l0 (64,) in file vs (96,) in model"),
    (lambda sd: sd.update({"gru.weight_ih_l1": sd.pop("gru.weight_ih_l0")}),
     "missing keys gru.weight_ih_l0; unexpected keys gru.weight_ih_l1"),
])
def test_a_pair_with_a_missing_or_misshapen_gru_key_is_refused_by_name(lrnet_dir, tmp_path, caplog, damage, named):
    weights = torch.load(lrnet_dir / "ffpp" / "g2.pth", map_location="cpu", weights_only=True)
    damage(weights)
    torch.save(weights, tmp_path / "g2.pth")
    out = tmp_path / "lrnet.pt"
    argv = ["--format", "lrnet", "--out", str(out), str(lrnet_dir / "ffpp" / "g1.pth"), str(tmp_path / "g2.pth")]
    with caplog.at_level(logging.ERROR):
        assert convert.main(argv) == 2
    assert f"{tmp_path / 'g2.pth'}: not the lrnet layout (LRNet branch): {named}" in caplog.text
    assert not out.exists()


def test_one_file_of_a_pair_alone_is_refused_saying_how(lrnet_dir, tmp_path, caplog):
    assert convert.main(["--out", str(tmp_path / "g1.pt"), str(lrnet_dir / "ffpp" / "g1.pth")]) == 2  # guessed: lrnet
    assert "g1.pth: one part of a lrnet model: convert its files (g1, g2) together with --format lrnet" in caplog.text
    assert not (tmp_path / "g1.pt").exists()


def test_a_sequence_checkpoint_round_trips_with_its_description(tmp_path):
    torch.manual_seed(0)
    config = LRNetConfig(hidden=8, layers=2, residual=16, block=12)
    model = LRNet(config).eval()
    model.spec = LandmarkSpec(calibrate=False, crop_size=256, face_scale=1.5)
    model.calibration = Calibration(2.0, 0.25, "logitmean")
    save_checkpoint(tmp_path / "run.pt", model, calibration=model.calibration.to_dict(), optimizer={"step": 3})
    export_checkpoint(tmp_path / "run.pt", tmp_path / "shipped.pt")  # without its resume state
    assert "optimizer" not in read_checkpoint(tmp_path / "shipped.pt")
    loaded = load_model(tmp_path / "shipped.pt", family=None)
    assert (loaded.config, loaded.spec, loaded.calibration) == (config, model.spec, model.calibration)
    sequence = np.random.default_rng(0).normal(size=(37, 136)).astype(np.float32)
    blocks = model.blocks(sequence)
    assert blocks.shape == (3, 12, 136) and torch.equal(blocks[2], torch.from_numpy(sequence[24:36]))
    assert model.blocks(sequence[:11]).shape == (0, 12, 136)  # shorter than one block: none
    with torch.inference_mode():
        assert torch.equal(loaded(blocks), model(blocks))


@pytest.mark.parametrize("change, named", [
    (lambda p: p["landmark_spec"].update(smoothing=True), "unknown key(s) ['smoothing']"),
    (lambda p: p["landmark_spec"].update(detector="fan"), "detector 'fan' is not one of ['dlib68']"),
    (lambda p: p["model"].update(hidden=0), "LRNet config"),
    (lambda p: p["state_dict"].pop("g2.head.bias"), "weights do not fit LRNet: missing keys g2.head.bias"),
    (lambda p: p.update(family="audio"), "unknown model family 'audio'"),
])
def test_a_sequence_checkpoint_that_does_not_describe_itself_is_refused_by_name(tmp_path, change, named):
    save_checkpoint(tmp_path / "seq.pt", LRNet(LRNetConfig()))
    payload = torch.load(tmp_path / "seq.pt", weights_only=True)
    change(payload)
    torch.save(payload, tmp_path / "seq.pt")
    with pytest.raises(CheckpointError, match=f"seq.pt: .*{__import__('re').escape(named)}"):
        load_model(tmp_path / "seq.pt", family=None)


def test_frame_model_tools_given_a_sequence_checkpoint_say_so_in_one_line(tmp_path, caplog):
    shipped = REPO / "weights" / "lrnet_ffpp.pt"
    with pytest.raises(CheckpointError, match="lrnet_ffpp.pt: holds a sequence model .*; this takes a frame model"):
        load_model(shipped)  # frame models by default: crossval, the notebook API, Grad-CAM
    (tmp_path / "lite0" / "fold0").mkdir(parents=True)
    shutil.copy(DEMO_WEIGHTS, tmp_path / "lite0" / "fold0" / "last.pt")  # the config's runs: a frame model
    argv = ["--crossval", str(tmp_path), "--config", "lite0", "--into", str(shipped)]
    with caplog.at_level(logging.ERROR):
        assert calibrate.main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"{shipped}: holds a sequence model (landmark sequences); this takes a frame model (face crops) only"]
    assert REPO / "weights" / "lite0.pt" in default_weights() and shipped not in default_weights()


def test_a_published_models_temperature_is_fitted_on_the_kernels_video_scores_and_stored(tmp_path, caplog):
    """Scores three times too sure of themselves, on 120 videos in 60 identity groups (one abstained):
    the cross-fitted temperature pays, and the one fitted on all goes into the checkpoint."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    z = rng.normal(2 * labels - 1, 1.5)
    root = tmp_path / "videos"
    root.mkdir()
    for v in range(120):
        (root / f"v{v:03d}.mp4").touch()
    pd.DataFrame({"path": [f"v{v:03d}.mp4" for v in range(120)], "label": labels,
                  "group": [f"person{v // 2}" for v in range(120)]}).to_csv(tmp_path / "labels.csv", index=False)
    scores = 1 / (1 + np.exp(-3 * z))
    scores[7] = np.nan  # abstained: left out
    pd.DataFrame({"filename": [f"v{v:03d}.mp4" for v in range(120)], "score_lrnet": scores}).to_csv(
        tmp_path / "submission_details.csv", index=False)
    target = tmp_path / "lrnet.pt"
    save_checkpoint(target, LRNet(LRNetConfig()))  # uncalibrated
    argv = ["--details", str(tmp_path / "submission_details.csv"), "--root", str(root), "--labels",
            str(tmp_path / "labels.csv"), "--model", "lrnet", "--into", str(target)]
    assert calibrate.main(argv) == 0
    report = json.loads((tmp_path / "calibration_lrnet.json").read_text())
    assert report["videos"] == 119 and report["strategy"] == "logitmean"
    rows = report["cross_fitted"]
    assert rows[report["chosen"]]["logloss_balanced"] < rows["raw"]["logloss_balanced"] - 0.05
    stored = load_model(target, family=None).calibration
    assert stored.to_dict() == report["calibration"] and stored.temperature > 2
    with caplog.at_level(logging.ERROR):
        assert calibrate.main(argv) == 2  # fitted on calibrated scores it would count twice
    assert f"{target}: already calibrated" in caplog.text
