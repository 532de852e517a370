"""Training LRNet on our data: the sequences are the kernel's, training learns a planted difference,
cross-validation scores blocks and leaves out the videos without one, and the trained checkpoint
is what the kernel loads and scores a clip with."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kernels import runner, scoring
from kernels.ensemble import Ensemble
from kernels.pipeline import Cutting, detect_video
from models.calibration import logit
from models.checkpoint import load_model
from models.metrics import label_metrics
from plumbing.fileio import atomic_write, write_json
from plumbing.strict import ConfigError
from preprocessing.landmarks import LandmarkSpec
from preprocessing.prepare_sequences import SequencePrepareConfig, prepare_sequences, read_sequences, sequence_path
from training import crossval, train_sequences

CLIP = "dfdc_face_crops/REAL/0_aayrffkzxn.mp4_0_0.mp4"
RUNS = 1


def write_config(path: Path, epochs: int, **train) -> Path:
    path.write_text(json.dumps({"family": "sequence", "model": {"hidden": 8, "residual": 16},
                                "train": {"epochs": epochs, "lr": 0.01, "batch_size": 32, **train}}))
    return path


@pytest.fixture(scope="module")
def extracted(data_dir, tmp_path_factory) -> Path:
    """``prepare_sequences`` on a prepared table of one real clip and one unreadable file."""
    root = tmp_path_factory.mktemp("lmseq")
    (root / "broken.mp4").write_bytes(b"\x00" * 1000)
    pd.DataFrame({"video": ["clip", "broken"], "path": [str(data_dir / CLIP), str(root / "broken.mp4")],
                  "label": [0, 1], "fold": [0, 1], "group": ["a", "b"], "status": "ok"}).to_csv(root / "videos.csv", index=False)
    summary = prepare_sequences(SequencePrepareConfig(str(root), str(root / "sequences"), runs=RUNS))
    assert summary["made"] == 1 and list(summary["failures"]) == ["broken"]
    return root


def test_the_sequences_are_the_kernels_and_land_on_the_face(extracted, data_dir, detector):
    stored = read_sequences(extracted / "sequences", "clip")
    spec = LandmarkSpec()
    kernel = detect_video(CLIP, data_dir / CLIP, 1, detector, Cutting(specs=(), runs=RUNS, landmarks=(spec,))).sequences[spec]
    assert len(stored["landmarks"]) == len(kernel) == RUNS  # one face followed through each run
    for landmarks, frames, found in zip(stored["landmarks"], stored["frames"], kernel):
        np.testing.assert_array_equal(landmarks, found.landmarks)
        np.testing.assert_array_equal(frames, found.frames)
        points = landmarks.reshape(30, 68, 2)
        eyes, nose, mouth = points[:, 36:48, 1].mean(1), points[:, 30, 1], points[:, 48:68, 1].mean(1)
        assert np.all(eyes < nose) and np.all(nose < mouth)  # a face, upright, in every frame
        jaw_left, jaw_right, nose_x = points[:, 0, 0], points[:, 16, 0], points[:, 30, 0]
        assert np.all(jaw_left < nose_x) and np.all(nose_x < jaw_right) and np.all(jaw_right - jaw_left > 0.5)
    table = pd.read_csv(extracted / "sequences" / "sequences.csv")
    assert table[["video", "run", "frames", "label", "fold"]].values.tolist() == [["clip", r, 30, 0, 0] for r in range(RUNS)]


def test_a_second_run_resumes_and_other_settings_are_refused(extracted, caplog):
    out = extracted / "sequences"
    before = sequence_path(out, "clip").stat().st_mtime_ns
    summary = prepare_sequences(SequencePrepareConfig(str(extracted), str(out), runs=RUNS))
    assert summary["made"] == 0 and list(summary["failures"]) == ["broken"]  # retried, failed again
    assert sequence_path(out, "clip").stat().st_mtime_ns == before
    assert "broken.mp4" in caplog.text
    assert not list(out.rglob("*.tmp"))
    with pytest.raises(ValueError, match="runs=1"):
        prepare_sequences(SequencePrepareConfig(str(extracted), str(out), runs=2))


def planted(root: Path, videos: int = 40, seed: int = 0) -> Path:
    """A sequences folder of synthetic videos: each a face of 68 points drifting smoothly; a fake's
    face also shakes frame to frame (all points together, 0.03: 6 crop pixels). Two sequences each,
    five folds; one video has none. (Each point jittering on its own is learned too, but from 40
    videos the GRUs memorise the training blocks' noise first.)"""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.6, 0.6, (68, 2))
    rows = []
    for v in range(videos):
        label, name = v % 2, f"v{v:02d}"
        drift = np.cumsum(rng.normal(0, 0.004, (2, 30, 1, 2)), axis=1)
        points = base + drift + (rng.normal(0, 0.03, (2, 30, 1, 2)) if label else 0)
        count = 0 if v == videos - 1 else 2
        arrays = {"landmarks": points.reshape(2, 30, 136)[:count].astype(np.float32), "run": np.arange(count),
                  "track": np.zeros(count, int), "frames": np.arange(60).reshape(2, 30)[:count]}
        with atomic_write(sequence_path(root, name), "wb") as f:
            np.savez(f, **arrays)
        rows += [(name, run, 0, 30 * run, 30, label, v % 5, name) for run in range(count)]
        write_json(root / "config.json", {"spec": LandmarkSpec().to_dict()})
    pd.DataFrame(rows, columns=["video", "run", "track", "start", "frames", "label", "fold", "group"]).to_csv(
        root / "sequences.csv", index=False)
    return root


def test_training_learns_planted_jitter_and_saves_a_checkpoint_with_the_sequences_spec(tmp_path):
    sequences = planted(tmp_path / "sequences")
    config = write_config(tmp_path / "tiny.json", epochs=30)
    metrics = train_sequences.fit(train_sequences.load_config(config), sequences, 0, tmp_path / "run")
    assert list(metrics.epoch) == list(range(31)) and metrics.train_loss.iloc[-1] < metrics.train_loss.iloc[1]
    scores = train_sequences.score_run(tmp_path / "run" / "last.pt", sequences, 0)
    assert scores.video.nunique() == 8 and label_metrics(scores.label, scores.prob)["auc"] > 0.95  # fold 0's videos
    model = load_model(tmp_path / "run" / "best.pt", family="sequence")
    assert model.spec == LandmarkSpec() and model.config.hidden == 8


def test_sequence_configs_are_checked_by_name(tmp_path):
    config = write_config(tmp_path / "bad.json", epochs=1, momentum=0.9)
    with pytest.raises(ConfigError, match=r"bad.json.*momentum"):
        train_sequences.load_config(config)
    write_config(config, epochs=1, init="weights/lrnet_ffpp.pt")
    with pytest.raises(ConfigError, match="only from scratch"):
        train_sequences.load_config(config)
    assert not train_sequences.is_sequence_config(Path(__file__).parents[1] / "training" / "configs" / "lite0.json")


def test_crossval_scores_every_block_once_and_leaves_out_a_video_without_sequences(tmp_path):
    sequences = planted(tmp_path / "sequences", videos=20)
    table = pd.read_csv(sequences / "sequences.csv").drop_duplicates("video")
    names = [f"v{v:02d}" for v in range(20)]
    pd.DataFrame({"video": names, "label": [v % 2 for v in range(20)], "dataset": "synthetic",
                  "method": "jitter"}).to_csv(tmp_path / "videos.csv", index=False)
    published = tmp_path / "published.json"
    published.write_text(json.dumps({"family": "sequence", "train": {"init": "weights/lrnet_ffpp.pt", "epochs": 0}}))
    results = crossval.crossvalidate([write_config(tmp_path / "tiny.json", epochs=2), published], tmp_path,
                                     tmp_path / "cv", list(range(5)), resamples=0, sequences=sequences)
    crops = results.crops[(results.crops.config == "tiny") & (results.crops.checkpoint == "last")]
    assert sorted(crops.video.unique()) == sorted(table.video) == names[:-1]  # v19 has no sequence: abstains
    assert len(crops) == 2 * 19 and set(crops.frame) == {0, 30}
    assert (crops.groupby("video").fold.first() == table.set_index("video").fold).all()
    assert set(results.summary.videos) == {19}
    video = results.videos.set_index(["config", "checkpoint", "video"]).loc[("tiny", "last", "v00")]
    probs = crops[crops.video == "v00"].prob
    assert video.prob == pytest.approx(1 / (1 + math.exp(-logit(probs).mean())))  # the kernel's rule for blocks
    # chosen: each fold's blocks as its run's validation scored them at the epoch the other folds chose
    chosen = results.folds.set_index(["config", "checkpoint", "fold"]).epoch.sort_index()
    for fold in range(5):
        recorded = pd.read_csv(tmp_path / "cv" / "tiny" / f"fold{fold}" / "epoch_crops.csv")
        assert sorted(recorded.epoch.unique()) == [0, 1, 2]  # epoch 0: the initial model
        for checkpoint in ("chosen", "last"):
            scored = results.crops.query("config == 'tiny' and checkpoint == @checkpoint and fold == @fold")
            at = recorded[recorded.epoch == chosen[("tiny", checkpoint, fold)]]
            assert scored[["video", "frame", "track", "label"]].values.tolist() == \
                at[["video", "frame", "track", "label"]].values.tolist()
            assert np.allclose(scored.prob, at.prob, atol=1e-6 if checkpoint == "last" else 0)
    assert (chosen.loc[("tiny", "last")] == 2).all() and (chosen.loc[("published", "chosen")] == 0).all()
    published_chosen = results.videos.query("config == 'published' and checkpoint == 'chosen'").prob
    assert np.allclose(published_chosen, results.videos.query("config == 'published' and checkpoint == 'last'").prob)
    epoch = load_model(tmp_path / "cv" / "published" / "fold0" / "last.pt", family="sequence")
    original = load_model("weights/lrnet_ffpp.pt", family="sequence")
    assert all((a == b).all() for a, b in zip(epoch.state_dict().values(), original.state_dict().values()))


def test_the_kernel_loads_a_trained_checkpoint_and_scores_a_clip_as_its_blocks_say(extracted, data_dir, tmp_path):
    config = write_config(tmp_path / "tiny.json", epochs=1)
    train_sequences.fit(train_sequences.load_config(config), planted(tmp_path / "sequences"), None, tmp_path / "run")
    ensemble = Ensemble.load([tmp_path / "run" / "last.pt"], precision="fp32")
    details = runner.run([("clip.mp4", data_dir / CLIP)], ensemble, tmp_path / "submission.csv",
                         scoring.Settings(frames=1, workers=0, runs=RUNS)).set_index("filename")
    model = load_model(tmp_path / "run" / "last.pt", family="sequence")
    blocks = train_sequences.block_probs(model, model.blocks(read_sequences(extracted / "sequences", "clip")["landmarks"].reshape(-1, 136)))
    assert len(blocks) == RUNS
    assert details.loc["clip.mp4", "score_last"] == pytest.approx(1 / (1 + math.exp(-logit(blocks).mean())), abs=1e-6)
