"""Calibration for log-loss: fitted right, never worse where fitted, stored in checkpoints, applied by the kernel."""
from __future__ import annotations

import json
import logging
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from kernels import calibrate, runner, scoring
from kernels.aggregate import aggregate
from kernels.ensemble import Ensemble
from models.calibration import Calibration, fit, logit
from models.checkpoint import CheckpointError, amend_checkpoint, load_model, read_checkpoint
from models.checkpoint import main as checkpoint_main
from models.metrics import label_metrics
from plumbing.strict import ConfigError


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True logits ``z`` and labels drawn with probability ``sigmoid(z)``: ``sigmoid(z)`` is calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    return z, (rng.random(n) < sigmoid(z)).astype(int)


def test_the_calibration_is_a_temperature_and_a_bias_on_the_logit():
    probs = np.array([0.01, 0.3, 0.5, 0.93])
    assert np.allclose(Calibration(2.0, 0.5)(probs), sigmoid(np.log(probs / (1 - probs)) / 2.0 + 0.5))
    assert Calibration()(0.3) == pytest.approx(0.3) and isinstance(Calibration()(0.3), float)
    for bad in ({"temperature": 0.0}, {"temperature": -1.0}, {"bias": float("nan")}):
        with pytest.raises(ConfigError, match="temperature must be > 0 and bias finite"):
            Calibration(**bad)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['temprature'\]"):
        Calibration.from_dict({"temprature": 2.0})


@pytest.mark.parametrize("sharpness, shift", [(2.5, 0.0), (0.5, 0.0), (1.0, 1.0)])
def test_fit_undoes_a_known_miscalibration(sharpness, shift):
    z, labels = sample(4000, seed=1)
    fitted = fit(labels, sigmoid(sharpness * z + shift))
    # sigmoid(logit(p) / T + b) = sigmoid(z) when T = sharpness and b = -shift / sharpness
    assert fitted.temperature == pytest.approx(sharpness, rel=0.12)
    assert fitted.bias == pytest.approx(-shift / sharpness, abs=0.15)


@pytest.mark.parametrize("case", ["overconfident", "calibrated", "underconfident", "backwards", "one class", "separable"])
def test_fit_never_increases_the_log_loss_it_was_fitted_on(case):
    z, labels = sample(300, seed=2)
    probs = {"overconfident": sigmoid(3 * z), "calibrated": sigmoid(z), "underconfident": sigmoid(z / 4),
             "backwards": sigmoid(-z), "one class": sigmoid(z), "separable": np.where(labels == 1, 0.7, 0.4)}[case]
    if case == "one class":
        labels = np.ones_like(labels)
    for bias in (False, True):
        fitted = fit(labels, probs, bias=bias)
        before, after = label_metrics(labels, probs)["logloss"], label_metrics(labels, fitted(probs))["logloss"]
        assert after <= before + 1e-12, (case, bias, fitted)
        assert bias or fitted.bias == 0.0
        assert 0.05 - 1e-9 <= fitted.temperature <= 20 + 1e-9  # bounded, even on separable scores
    if case == "one class":
        assert fitted == Calibration()


# --- in the checkpoint and the kernel ---------------------------------------------------------


@pytest.fixture
def calibrated(checkpoint, tmp_path):
    """A copy of the tiny checkpoint with a strong calibration stored in it."""
    path = tmp_path / "calibrated.pt"
    shutil.copy(checkpoint, path)
    amend_checkpoint(path, calibration=Calibration(0.002, 0.3, "confident").to_dict())
    return path


def test_a_stored_calibration_loads_and_nothing_else_changes(checkpoint, calibrated):
    before, after = read_checkpoint(checkpoint), read_checkpoint(calibrated)
    assert after.pop("calibration") == {"temperature": 0.002, "bias": 0.3, "strategy": "confident"}
    assert after.keys() == before.keys() and after["model"] == before["model"]
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    assert load_model(calibrated).calibration == Calibration(0.002, 0.3, "confident")
    assert load_model(checkpoint).calibration == Calibration()  # a checkpoint without one: the identity


def test_a_broken_calibration_entry_is_one_error_naming_the_file(checkpoint, tmp_path):
    path = tmp_path / "bad.pt"
    shutil.copy(checkpoint, path)
    amend_checkpoint(path, calibration={"temperature": -2.0})
    with pytest.raises(CheckpointError, match=rf"^{path}: calibration .*temperature must be > 0"):
        load_model(path)


def test_the_kernel_scales_each_models_video_logit_by_its_temperature(data_dir, checkpoint, calibrated, tmp_path, caplog):
    clip = data_dir / "ffpp/manipulated_sequences/Deepfakes/c40/videos/183_253.mp4"
    runs = {}
    for name, weights in (("raw", checkpoint), ("calibrated", calibrated)):
        ensemble = Ensemble.load([weights], precision="fp32")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kernels.predict"):
            runs[name] = runner.run([("clip.mp4", clip)], ensemble, tmp_path / name / "submission.csv",
                                     scoring.Settings(frames=4, workers=0, strategy="mean", eps=1e-4))
        if name == "calibrated":  # fitted on the confident rule's scores, applied to the mean's
            assert "calibrated on 'confident' video scores, applied to 'mean' ones" in caplog.text
    raw = runs["raw"].loc[0, "score_tiny"]
    expected = sigmoid(logit(raw) / 0.002 + 0.3)  # by hand
    assert runs["calibrated"].loc[0, "score_calibrated"] == pytest.approx(expected, abs=1e-9)
    assert runs["calibrated"].loc[0, "label"] == pytest.approx(np.clip(expected, 1e-4, 1 - 1e-4), abs=1e-6)
    assert abs(expected - raw) > 0.05  # the calibration made a visible difference


# --- python -m kernels.calibrate ----------------------------------------------------------------


def crossval_crops(folder, sharpness: float = 3.0, videos: int = 120, folds: int = 4):
    """A ``training.crossval`` ``crops.csv`` of an overconfident model: 4 crops per video in 1-2 tracks."""
    z, labels = sample(videos, seed=3)
    rng = np.random.default_rng(4)
    rows = [{"config": "demo", "checkpoint": "last", "fold": v % folds, "video": f"v{v:03d}", "frame": frame,
             "track": frame % 2 if v % 3 == 0 else 0, "label": labels[v],
             "prob": sigmoid(sharpness * (z[v] + rng.normal(0, 0.3)))}
            for v in range(videos) for frame in range(4)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "crops.csv", index=False)
    return pd.DataFrame(rows)


def test_the_calibration_command_cross_fits_reports_and_stores(checkpoint, tmp_path):
    crops = crossval_crops(tmp_path / "cv")
    target = tmp_path / "model.pt"
    shutil.copy(checkpoint, target)
    assert calibrate.main(["--crossval", str(tmp_path / "cv"), "--config", "demo", "--into", str(target)]) == 0
    report = json.loads((tmp_path / "cv" / "calibration_demo.json").read_text())
    rows = report["cross_fitted"]
    assert report["videos"] == 120 and report["strategy"] == "confident"
    assert rows["temperature"]["logloss_balanced"] < rows["raw"]["logloss_balanced"] - 0.05  # it pays out of fold
    stored = load_model(target).calibration
    assert stored.to_dict() == report["calibration"] and stored.temperature > 1.5 and stored.strategy == "confident"
    # the video scores are the kernel's rule over each video's tracks
    videos = calibrate.video_scores(crops, "confident").set_index("video")
    one = crops[crops.video == "v003"]
    assert videos.loc["v003", "prob"] == pytest.approx(aggregate(one.prob, one.track, "confident"))


@pytest.mark.parametrize("args, message", [
    (["--config", "other"], r"crops.csv: no crops of config 'other', checkpoint 'last'; it holds \[\('demo', 'last'\)\]"),
    (["--config", "demo", "--into", "{tmp}/missing.pt"], r"missing.pt: no such checkpoint file"),
])
def test_calibration_command_mistakes_are_one_line_and_write_nothing(tmp_path, caplog, args, message):
    crossval_crops(tmp_path / "cv")
    argv = ["--crossval", str(tmp_path / "cv"), *[a.format(tmp=tmp_path) for a in args]]
    assert calibrate.main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and re.search(message, errors[0])
    assert not list((tmp_path / "cv").glob("calibration_*.json"))


def test_a_shipped_copy_drops_the_resume_state_and_keeps_the_model_and_its_calibration(calibrated, tmp_path, caplog):
    amend_checkpoint(calibrated, optimizer={"state": {}, "param_groups": []}, history=[{"epoch": 0}], epoch=3)
    assert checkpoint_main([str(calibrated), str(tmp_path / "shipped.pt")]) == 0
    shipped = read_checkpoint(tmp_path / "shipped.pt")
    assert "optimizer" not in shipped and "history" not in shipped and shipped["epoch"] == 3
    original, copy = load_model(calibrated), load_model(tmp_path / "shipped.pt")
    assert copy.calibration == original.calibration
    assert all(torch.equal(copy.state_dict()[k], v) for k, v in original.state_dict().items())
    assert checkpoint_main([str(tmp_path / "missing.pt"), str(tmp_path / "out.pt")]) == 2
    assert f"{tmp_path / 'missing.pt'}: no such checkpoint file" in caplog.text and not (tmp_path / "out.pt").exists()


def test_where_calibrating_does_not_pay_out_of_fold_nothing_is_stored(checkpoint, tmp_path):
    """Fold 0 overconfident, fold 1 underconfident: each fold's fit makes the other worse."""
    z, labels = sample(200, seed=5)
    rows = [{"config": "demo", "checkpoint": "last", "fold": v % 2, "video": f"v{v:03d}", "frame": 0, "track": 0,
             "label": labels[v], "prob": sigmoid(z[v] * (3.0 if v % 2 == 0 else 1 / 3))} for v in range(200)]
    (tmp_path / "cv").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "cv" / "crops.csv", index=False)
    fitted, report = calibrate.calibrate(tmp_path / "cv", "demo")
    assert report["chosen"] == "raw" and fitted == Calibration(strategy="confident")
    rows = report["cross_fitted"]
    assert rows["raw"]["logloss_balanced"] < min(rows["temperature"]["logloss_balanced"],
                                                 rows["temperature_bias"]["logloss_balanced"])
