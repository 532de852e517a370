"""Cross-validation of training configs on the real prepared sample: every video scored once per config
and checkpoint, by the run of its own fold, pooled metrics equal to sklearn's, finished runs reused."""
import json
import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from kernels import calibrate
from models.metrics import intervals, label_metrics
from models.checkpoint import load_model
from models.zoo import ModelConfig
from training import crossval
from training.config import DataConfig, RunConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_config(path, mix):
    train = TrainConfig(epochs=2, batch_size=2, iterations=1, optimizer="adamw", lr=3e-2, precision="fp32", workers=0)
    path.write_text(json.dumps(RunConfig(ModelConfig("mobilenetv3_small_050", 64), train, DataConfig(mix=mix)).to_dict()))
    return path


def test_every_video_is_scored_once_per_config_by_its_folds_run(prepared_dir, tmp_path, caplog):
    configs = [write_config(tmp_path / "plain.json", {"real": 0.5, "fake": 0.5}),
               write_config(tmp_path / "pseudo.json", {"real": 0.5, "fake": 0.25, "pseudo": 0.25})]
    out = tmp_path / "cv"
    caplog.set_level(logging.INFO, logger="training.crossval")
    argv = ["--configs", *map(str, configs), "--data", str(prepared_dir), "--out", str(out), "--bootstrap", "200"]
    assert crossval.main(argv) == 0
    videos = pd.read_csv(out / "videos.csv")
    prepared = pd.read_csv(prepared_dir / "videos.csv").set_index("video")
    assert set(prepared.fold) == {0, 1}
    for (config, checkpoint), part in videos.groupby(["config", "checkpoint"]):
        part = part.set_index("video")
        assert sorted(part.index) == sorted(prepared.index), (config, checkpoint)
        assert (part.fold == prepared.fold[part.index]).all() and (part.label == prepared.label[part.index]).all()
    # best.pt scores what training recorded for its best epoch
    for fold in (0, 1):
        recorded = pd.read_csv(out / "plain" / f"fold{fold}" / "best_videos.csv").set_index("video")
        best = videos.query("config == 'plain' and checkpoint == 'best' and fold == @fold").set_index("video")
        assert np.allclose(best.prob, recorded.prob[best.index], atol=1e-5)
    # last.pt scores what training measured at its last epoch (metrics.csv), for every config and fold
    # (lr 3e-2 overshoots: most runs' best epoch is the first, so last and best could not be swapped unseen)
    best_epochs = []
    for (config, fold), last in videos.query("checkpoint == 'last'").groupby(["config", "fold"]):
        measured = pd.read_csv(out / config / f"fold{fold}" / "metrics.csv")
        best_epochs.append(int(measured.epoch[measured.val_logloss.idxmin()]))
        scored = label_metrics(last.label, last.prob)
        assert (scored["logloss"], scored["auc"]) == pytest.approx(
            (measured.val_logloss.iloc[-1], measured.val_auc.iloc[-1]), abs=1e-5)
    assert 0 in best_epochs
    # pooled metrics: the mean of the real and fake videos' log-losses, and AUC, over both folds
    summary = pd.read_csv(out / "summary.csv").set_index(["config", "checkpoint"])
    assert len(summary) == 4 and (summary.videos == len(prepared)).all()
    pooled = videos.query("config == 'pseudo' and checkpoint == 'last'")
    real, fake = pooled[pooled.label == 0], pooled[pooled.label == 1]
    expected = (log_loss(real.label, real.prob, labels=[0, 1]) + log_loss(fake.label, fake.prob, labels=[0, 1])) / 2
    assert summary.loc[("pseudo", "last"), "logloss"] == pytest.approx(expected)
    assert summary.loc[("pseudo", "last"), "auc"] == pytest.approx(roc_auc_score(pooled.label, pooled.prob))
    for metric in ("logloss", "auc"):
        assert (summary[f"{metric}_lo"] <= summary[metric]).all() and (summary[metric] <= summary[f"{metric}_hi"]).all()
    assert len(pd.read_csv(out / "folds.csv")) == 8
    assert "pooled over folds [0, 1]" in caplog.text
    # crops.csv: every validation crop once per run, and a video's score is the mean of its crops'
    crops = pd.read_csv(out / "crops.csv")
    prepared_crops = pd.read_csv(prepared_dir / "crops.csv")
    assert len(crops) == 4 * len(prepared_crops)
    means = crops.groupby(["config", "checkpoint", "video"]).prob.mean()
    assert np.allclose(videos.set_index(["config", "checkpoint", "video"]).prob, means[videos.set_index(
        ["config", "checkpoint", "video"]).index], atol=1e-9)
    # methods.csv: one method's fakes against every real video, as sklearn computes it
    methods = pd.read_csv(out / "methods.csv").set_index(["config", "checkpoint", "group"]).sort_index()
    row = methods.loc[("plain", "best", "ffpp FaceSwap vs all reals")]
    chosen = pooled_of(videos, "plain", "best").join(prepared[["method"]], on="video")
    chosen = chosen[(chosen.label == 0) | (chosen.method == "FaceSwap")]
    assert row.videos == len(chosen) == 3 and row.auc == pytest.approx(roc_auc_score(chosen.label, chosen.prob))
    assert {"dataset ffpp", "ffpp Deepfakes vs all reals", "ffpp NeuralTextures vs all reals"} <= set(
        methods.loc[("plain", "best")].index)
    # the kernel's calibration reads the real output and stores its fit in a checkpoint
    target = out / "plain" / "fold0" / "best.pt"
    assert calibrate.main(["--crossval", str(out), "--config", "plain", "--checkpoint", "best", "--into", str(target)]) == 0
    report = json.loads((out / "calibration_plain.json").read_text())
    assert report["videos"] == len(prepared) and load_model(target).calibration.to_dict() == report["calibration"]
    # a second call reuses the finished runs
    weights = {path: path.stat().st_mtime_ns for path in out.rglob("*.pt")}
    assert len(weights) == 8 and crossval.main(argv) == 0
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*.pt")} == weights
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), summary.reset_index())  # seeded intervals


def pooled_of(videos: pd.DataFrame, config: str, checkpoint: str) -> pd.DataFrame:
    return videos[(videos.config == config) & (videos.checkpoint == checkpoint)].set_index("video")


def test_bootstrap_intervals_keep_both_classes_and_narrow_with_more_videos():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(15, int), np.ones(28, int)]
    probs = np.clip(0.5 + 0.15 * (labels - 0.5) + rng.normal(0, 0.15, len(labels)), 0.01, 0.99)
    few = intervals(labels, probs)
    many = intervals(np.tile(labels, 16), np.tile(probs, 16))
    metrics = label_metrics(labels, probs)
    for metric in ("logloss", "auc"):
        assert few[f"{metric}_lo"] < metrics[metric] < few[f"{metric}_hi"]
        assert many[f"{metric}_lo"] < metrics[metric] < many[f"{metric}_hi"]
        # 16 times the videos: about a quarter of the width
        width = {name: bounds[f"{metric}_hi"] - bounds[f"{metric}_lo"] for name, bounds in (("few", few), ("many", many))}
        assert 0.15 < width["many"] / width["few"] < 0.4, metric
    one_real = np.r_[0, np.ones(10, int)]  # every draw keeps its one real video: AUC defined, and 1
    perfect = intervals(one_real, one_real * 0.8 + 0.1)
    assert perfect["auc_lo"] == perfect["auc_hi"] == 1.0


def test_a_missing_config_is_one_clear_line(prepared_dir, tmp_path, caplog):
    argv = ["--configs", str(tmp_path / "nope.json"), "--data", str(prepared_dir), "--out", str(tmp_path / "cv")]
    assert crossval.main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{tmp_path / 'nope.json'}: no such config file"]
    assert not (tmp_path / "cv" / "summary.csv").exists()


def test_a_negative_bootstrap_count_is_refused_before_any_training(prepared_dir, tmp_path, capsys):
    argv = ["--configs", str(write_config(tmp_path / "plain.json", {"real": 0.5, "fake": 0.5})),
            "--data", str(prepared_dir), "--out", str(tmp_path / "cv"), "--bootstrap", "-1"]
    with pytest.raises(SystemExit) as exit_:
        crossval.main(argv)
    assert exit_.value.code == 2 and "--bootstrap: a count of resamples >= 0, not -1" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()
