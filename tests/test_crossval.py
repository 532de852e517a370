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
    # chosen: each fold at the epoch the other fold's run validated best, scored as validation recorded it;
    # the recorded scores of the best and last epochs are what best.pt and last.pt score now
    folds = pd.read_csv(out / "folds.csv").set_index(["config", "checkpoint", "fold"])
    crops = pd.read_csv(out / "crops.csv")
    for config in ("plain", "pseudo"):
        for fold in (0, 1):
            run = out / config / f"fold{fold}"
            other = pd.read_csv(out / config / f"fold{1 - fold}" / "metrics.csv")
            epoch = int(other.epoch[other.val_logloss.idxmin()])
            assert folds.loc[(config, "chosen", fold), "epoch"] == epoch
            recorded = pd.read_csv(run / "epoch_crops.csv")
            assert sorted(recorded.epoch.unique()) == [0, 1] and (recorded.groupby("epoch").size() == len(
                pd.read_csv(prepared_dir / "crops.csv").query("fold == @fold"))).all()
            for checkpoint in ("chosen", "best", "last"):
                scored = crops.query("config == @config and checkpoint == @checkpoint and fold == @fold")
                at = recorded[recorded.epoch == folds.loc[(config, checkpoint, fold), "epoch"]]
                pd.testing.assert_frame_equal(scored[["video", "frame", "track", "label"]].reset_index(drop=True),
                                              at[["video", "frame", "track", "label"]].reset_index(drop=True))
                assert np.allclose(scored.prob, at.prob, atol=1e-5 if checkpoint != "chosen" else 0), checkpoint
    # pooled metrics: the mean of the real and fake videos' log-losses, and AUC, over both folds
    summary = pd.read_csv(out / "summary.csv").set_index(["config", "checkpoint"])
    assert len(summary) == 6 and (summary.videos == len(prepared)).all()
    pooled = videos.query("config == 'pseudo' and checkpoint == 'last'")
    real, fake = pooled[pooled.label == 0], pooled[pooled.label == 1]
    expected = (log_loss(real.label, real.prob, labels=[0, 1]) + log_loss(fake.label, fake.prob, labels=[0, 1])) / 2
    assert summary.loc[("pseudo", "last"), "logloss"] == pytest.approx(expected)
    assert summary.loc[("pseudo", "last"), "auc"] == pytest.approx(roc_auc_score(pooled.label, pooled.prob))
    for metric in ("logloss", "auc"):
        assert (summary[f"{metric}_lo"] <= summary[metric]).all() and (summary[metric] <= summary[f"{metric}_hi"]).all()
    assert len(folds) == 12
    assert "pooled over folds [0, 1]" in caplog.text and "chosen" in caplog.text
    # crops.csv: every validation crop once per run, and a video's score is the mean of its crops'
    prepared_crops = pd.read_csv(prepared_dir / "crops.csv")
    assert len(crops) == 6 * len(prepared_crops)
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
    # a run trained before epoch_crops.csv existed: its config has no chosen rows, one warning names the run
    (out / "plain" / "fold1" / "epoch_crops.csv").unlink()
    caplog.clear()
    assert crossval.main(argv) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(out / "plain" / "fold1") in warnings[0] and "fold0" not in warnings[0]
    checkpoints = pd.read_csv(out / "summary.csv").groupby("config").checkpoint.apply(set)
    assert checkpoints.to_dict() == {"plain": {"best", "last"}, "pseudo": {"best", "last", "chosen"}}
    # one fold: nothing to choose on, said once per config
    caplog.clear()
    assert crossval.main([*argv, "--folds", "0"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("folds [0]: no 'chosen' epoch" in w for w in warnings)
    assert set(pd.read_csv(out / "folds.csv").checkpoint) == {"best", "last"}


#: Planted validation log-loss curves of three folds' runs (epochs 0-2). Fold 0's own run is best at
#: epoch 0, the other two folds together at epoch 2; with fold 0's own curve in the mean, epoch 0 would win.
CURVES = {0: [0.1, 0.9, 0.9], 1: [0.7, 0.4, 0.5], 2: [0.7, 0.6, 0.3]}


def test_each_folds_epoch_is_chosen_on_the_other_folds_curves_only():
    assert crossval.chosen_epochs(pd.DataFrame(CURVES)) == {0: 2, 1: 0, 2: 0}
    # ties: the earlier epoch; a fold that validated nothing (NaN) is left out of the others' mean
    assert crossval.chosen_epochs(pd.DataFrame({0: [0.5, 0.5, 0.5], 1: [0.9, 0.2, 0.2]})) == {0: 1, 1: 0}
    nan = float("nan")
    assert crossval.chosen_epochs(pd.DataFrame({0: [0.1, 0.9], 1: [nan, nan], 2: [0.8, 0.2]})) == {0: 1, 1: 0, 2: 0}
    assert crossval.chosen_epochs(pd.DataFrame({0: [0.3, 0.2]})) == {}


def test_a_folds_chosen_scores_are_what_its_run_recorded_at_the_epoch_the_other_folds_chose(tmp_path, caplog):
    """Runs of planted metrics and per-epoch crop scores (each prob names its fold, epoch and crop)."""
    runs = {}
    for fold, curve in CURVES.items():
        runs[fold] = run = tmp_path / "planted" / f"fold{fold}"
        run.mkdir(parents=True)
        pd.DataFrame({"epoch": range(3), "val_logloss": curve}).to_csv(run / "metrics.csv", index=False)
        crops = [(epoch, f"v{fold}{v}", frame, 0, v % 2, fold / 10 + epoch / 100 + (2 * v + frame) / 1000)
                 for epoch in range(3) for v in range(2) for frame in range(2)]
        pd.DataFrame(crops, columns=["epoch", "video", "frame", "track", "label", "prob"]).to_csv(
            run / "epoch_crops.csv", index=False)
    chosen = crossval.chosen_scores("planted", runs)
    assert {fold: epoch for fold, (epoch, _) in chosen.items()} == {0: 2, 1: 0, 2: 0}
    epoch, scores = chosen[0]
    assert scores.columns.tolist() == ["video", "frame", "track", "label", "prob"]
    assert scores.video.tolist() == ["v00", "v00", "v01", "v01"] and scores.frame.tolist() == [0, 1, 0, 1]
    assert np.allclose(scores.prob, [0.02, 0.021, 0.022, 0.023])  # fold 0 at epoch 2, not its own best (0)
    # a run resumed across the change records only its later epochs: no chosen rows, one warning naming it
    partial = pd.read_csv(runs[2] / "epoch_crops.csv")
    partial[partial.epoch > 0].to_csv(runs[2] / "epoch_crops.csv", index=False)
    assert crossval.chosen_scores("planted", runs) == {}
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"planted: no 'chosen' rows: no epoch_crops.csv, or not of every epoch, in {runs[2]} (trained before it was written)"]


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
