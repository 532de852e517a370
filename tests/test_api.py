"""The notebook API: tables per video, track and frame that agree with the kernel's own outputs."""
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kernels.aggregate import STRATEGIES, aggregate
from kernels.api import Scorer, Scores, score_videos
from preprocessing.video import read_frames, sample_indices
from tests.conftest import DEMO_WEIGHTS

FAKE, REAL = "FAKE/0_aaqaifqrwn.mp4_0_0.mp4", "REAL/0_aayrffkzxn.mp4_0_0.mp4"


def test_video_labels_are_the_kernels_rule_over_the_frame_table_and_the_submission(demo_scores):
    scores, ensemble, _, out = demo_scores
    submission = pd.read_csv(out).set_index("filename")["label"]
    for _, video in scores.videos.iterrows():
        frames = scores.frames[scores.frames["filename"] == video["filename"]]
        assert video["label"] == pytest.approx(submission[video["filename"]], abs=1e-6)
        if video["status"] == "ok":
            oracle = np.clip(aggregate(frames["prob"], frames["track"], "confident"), 0.01, 0.99)
            assert video["label"] == pytest.approx(oracle, abs=1e-6)
            assert len(frames) == video["faces"] and frames["track"].nunique() == video["tracks"]


def test_videos_come_most_fake_first_with_paths_and_the_broken_one_gets_the_prior(demo_scores):
    scores, _, folder, _ = demo_scores
    assert list(scores.videos["label"]) == sorted(scores.videos["label"], reverse=True)
    assert set(scores.videos["filename"]) == {FAKE, REAL, "broken.mp4"}
    assert all(Path(p) == folder / f for f, p in zip(scores.videos["filename"], scores.videos["path"]))
    broken = scores.videos.set_index("filename").loc["broken.mp4"]
    assert (broken["status"], broken["label"]) == ("prior", 0.5)
    assert "not a readable video" in broken["reason"]
    assert "broken.mp4" not in set(scores.frames["filename"]) | set(scores.tracks["filename"])


def test_frame_rows_are_the_sampled_frames_and_the_model_on_their_crops(demo_scores):
    scores, ensemble, folder, _ = demo_scores
    for name in (FAKE, REAL):
        frames = scores.frames[scores.frames["filename"] == name]
        read = read_frames(folder / name, 3)
        assert set(frames["frame"]) == set(sample_indices(read.frame_count, 3).tolist()) == set(read.indices.tolist())
        crops = list(frames["crop"])
        assert all(c.dtype == np.uint8 and c.ndim == 3 for c in crops)
        np.testing.assert_allclose(frames["prob_cpu_demo"], ensemble.predict(crops)["cpu_demo"], atol=1e-5)
    np.testing.assert_allclose(scores.frames["prob"], scores.frames["prob_cpu_demo"])  # one model: same


def test_track_rows_reduce_each_tracks_frames_by_the_strategy(demo_scores):
    scores, *_ = demo_scores
    assert scores.tracks["filename"].value_counts().to_dict() == {REAL: 2, FAKE: 1}  # two people in the real clip
    per_track = STRATEGIES["confident"][0]
    for _, row in scores.tracks.iterrows():
        frames = scores.frames[(scores.frames["filename"] == row["filename"]) & (scores.frames["track"] == row["track"])]
        assert row["frames"] == len(frames)
        assert row["score"] == pytest.approx(per_track(frames["prob"].to_numpy()))


def test_one_video_view_and_an_unknown_name(demo_scores):
    scores, *_ = demo_scores
    one = scores.video(REAL)
    assert isinstance(one, Scores) and set(one.frames["filename"]) == {REAL} and len(one.videos) == 1
    with pytest.raises(KeyError, match="no video named 'nope.mp4'"):
        scores.video("nope.mp4")


def test_crops_as_png_paths_are_lossless_and_a_resumed_run_keeps_its_scores(demo_scores, tmp_path):
    scores, ensemble, folder, _ = demo_scores
    out = tmp_path / "submission.csv"
    first = score_videos([folder / FAKE], ensemble, out, crops_dir=tmp_path / "crops", frames=3, workers=0)
    for _, row in first.frames.iterrows():
        assert row["crop"] == tmp_path / "crops" / FAKE.split("/")[1] / f"{row['frame']:05d}_{row['track']}.png"
    saved = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in first.frames["crop"]]
    expected = scores.frames[scores.frames["filename"] == FAKE]
    assert all(np.array_equal(a, b) for a, b in zip(saved, expected["crop"]))
    resumed = score_videos([folder / FAKE], ensemble, out, frames=3, workers=0)  # nothing rescored
    assert resumed.frames["crop"].isna().all()
    np.testing.assert_allclose(resumed.frames["prob"], first.frames["prob"])
    assert resumed.videos["label"].tolist() == first.videos["label"].tolist()


def test_a_scorer_starts_its_worker_and_loads_its_models_once(demo_scores, tmp_path):
    expected, _, folder, _ = demo_scores
    with Scorer([DEMO_WEIGHTS], precision="fp32", frames=3, workers=1, strategy="confident") as scorer:
        workers = {p.pid for p in multiprocessing.active_children()}
        ensemble = scorer.ensemble
        first = scorer.score(folder, tmp_path / "a" / "submission.csv")
        assert {p.pid for p in multiprocessing.active_children()} == workers != set()
        again = scorer.score(folder, tmp_path / "b" / "submission.csv")
        assert {p.pid for p in multiprocessing.active_children()} == workers and scorer.ensemble is ensemble
    assert not multiprocessing.active_children()
    for scores in (first, again):  # the worker's crops are the in-process ones
        pd.testing.assert_frame_equal(scores.frames.drop(columns="crop"), expected.frames.drop(columns="crop"))
