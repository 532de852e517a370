"""The kernel with a sequence model (LRNet) beside a frame model: what the sequence model did on each
video goes to the details, an abstaining model leaves the decision to the others (or, stacked, counts
by its indicator), and resume and the Ray engine keep every model's result."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from kernels import runner, scoring
from kernels.ensemble import Ensemble
from kernels.progress import ProgressLog
from models.calibration import logit
from plumbing.cluster import ray_session
from plumbing.fileio import file_digest
from submission.io import read_submission
from tests.clips import write_clip

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = [REPO / "weights" / "lite0.pt", REPO / "weights" / "lrnet_ffpp.pt"]
FACES = ("dfdc_face_crops/FAKE/0_aaqaifqrwn.mp4_0_0.mp4", "dfdc_face_crops/REAL/0_aayrffkzxn.mp4_0_0.mp4")
SETTINGS = {"frames": 4, "workers": 0}


def first(path: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    return [capture.read()[1] for _ in range(count)]


@pytest.fixture(scope="module")
def folder(data_dir, tmp_path_factory) -> Path:
    """Made from two real 256 px face clips: two people side by side (30 frames: one run of two
    faces), one face that leaves after frame 44 (60 frames: lost in the second run), a clip of 20
    frames (shorter than one run), a still face image and an unreadable file."""
    out = tmp_path_factory.mktemp("sequence") / "videos"
    out.mkdir()
    one, two = (first(data_dir / clip, 60) for clip in FACES)
    write_clip(out / "pair.mp4", [np.concatenate([a, b], axis=1) for a, b in zip(one[:30], two)], 25)
    write_clip(out / "lost.mp4", [frame if i < 45 else np.full_like(frame, 128) for i, frame in enumerate(two)], 25)
    write_clip(out / "short.mp4", two[:20], 25)
    cv2.imwrite(str(out / "still.png"), two[0])
    (out / "broken.mp4").write_bytes(b"\x00" * 1000)
    return out


def named(folder: Path) -> list[tuple[str, Path]]:
    return [(p.name, p) for p in sorted(folder.iterdir())]


@pytest.fixture(scope="module")
def ensemble() -> Ensemble:
    return Ensemble.load(WEIGHTS, precision="fp32")


@pytest.fixture(scope="module")
def scored(folder, ensemble, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("out") / "submission.csv"
    return out, runner.run(named(folder), ensemble, out, scoring.Settings(**SETTINGS)).set_index("filename")


def test_the_details_say_what_the_sequence_model_did_and_the_submission_is_complete(folder, scored):
    out, details = scored
    submission = read_submission(out)
    assert sorted(submission.filename) == sorted(p.name for p in folder.iterdir())
    assert submission.label.between(0.01, 0.99).all()
    did = details[["blocks_lrnet_ffpp", "sequences_lrnet_ffpp", "abstained_lrnet_ffpp"]].fillna("")
    assert did.loc["pair.mp4"].tolist() == [2, 2, ""]  # two people in the run: one sequence each
    assert did.loc["lost.mp4"].tolist() == [1, 1, ""]  # the face is followed through the first run only
    assert did.loc["short.mp4"].tolist() == [0, 0, "video shorter than one run (20 frames < 30)"]
    assert did.loc["still.png"].tolist() == [0, 0, "a still image: no run of frames"]
    assert details.loc["broken.mp4", "status"] == "prior"
    assert did.loc["broken.mp4", "abstained_lrnet_ffpp"].startswith("not a readable video")
    assert (details.loc[["pair.mp4", "lost.mp4", "short.mp4", "still.png"], "status"] == "ok").all()


def test_the_sequence_score_is_the_blocks_mean_logit_and_an_abstaining_model_leaves_the_mean_to_the_others(scored, ensemble):
    out, details = scored
    records = ProgressLog(out.with_suffix(".progress.jsonl"), scoring.Settings(**SETTINGS).signature(ensemble)).records
    for name in ("pair.mp4", "lost.mp4"):
        blocks = records[name]["blocks"]["lrnet_ffpp"]["probs"]
        expected = ensemble.models[1].calibration(1 / (1 + np.exp(-np.mean(logit(blocks)))))  # its shipped temperature
        assert details.loc[name, "score_lrnet_ffpp"] == pytest.approx(expected, abs=1e-6)
        both = details.loc[name, ["score_lite0", "score_lrnet_ffpp"]].mean()
        assert details.loc[name, "label"] == pytest.approx(np.clip(both, 0.01, 0.99), abs=1e-6)
    for name in ("short.mp4", "still.png"):  # LRNet abstains: lite0 alone decides, not pulled towards 0.5
        assert np.isnan(details.loc[name, "score_lrnet_ffpp"])
        assert details.loc[name, "label"] == pytest.approx(np.clip(details.loc[name, "score_lite0"], 0.01, 0.99), abs=1e-6)


def test_a_resumed_run_keeps_every_models_result(folder, ensemble, scored):
    out, details = scored
    again = []
    resumed = runner.run(named(folder), ensemble, out, scoring.Settings(**SETTINGS), on_video=lambda *a: again.append(a))
    assert again == []  # nothing scored twice
    pd.testing.assert_frame_equal(resumed.set_index("filename"), details)


def test_a_sequence_model_alone_gives_the_prior_where_it_abstains(folder, tmp_path):
    alone = Ensemble.load(WEIGHTS[1:], precision="fp32")
    videos = [(n, p) for n, p in named(folder) if n in ("short.mp4", "still.png")]
    details = runner.run(videos, alone, tmp_path / "submission.csv", scoring.Settings(**SETTINGS)).set_index("filename")
    assert details.loc["still.png", ["status", "reason", "label"]].tolist() == ["prior", "a still image: no run of frames", 0.5]
    assert details.loc["short.mp4", "reason"] == "video shorter than one run (20 frames < 30)"


def test_the_ray_engine_gives_the_local_results(folder, ensemble, scored, tmp_path):
    videos = [(n, p) for n, p in named(folder) if n in ("lost.mp4", "still.png")]
    with ray_session(num_cpus=1):
        details = runner.run(videos, ensemble, tmp_path / "submission.csv", scoring.Settings(**{**SETTINGS, "engine": "ray"}))
    local = scored[1].loc[[n for n, _ in videos]]
    pd.testing.assert_frame_equal(details.set_index("filename").drop(columns="seconds"), local.drop(columns="seconds"),
                                  check_exact=False, atol=1e-6)


def test_a_stacked_run_combines_the_detail_files_scores_by_the_files_formula(folder, ensemble, scored, tmp_path):
    """The labels the runner writes (:func:`kernels.scoring.tables`) from the plain run's records, stacked."""
    coefficients = {"lite0": (0.8, 0.0), "lrnet_ffpp": (1.3, -0.9)}  # (logit, abstained)
    members = [{"name": p.stem, "checkpoint": p.name, "sha256": file_digest(p), "logit": coefficients[p.stem][0],
                "abstained": coefficients[p.stem][1]} for p in WEIGHTS]
    path = tmp_path / "stacking.json"
    path.write_text(json.dumps({"members": members, "intercept": 0.2}))
    stacked = Ensemble.load(WEIGHTS, device="meta", stacking=path)  # its models' outputs: the plain run's records
    out, plain = scored
    records = ProgressLog(out.with_suffix(".progress.jsonl"), scoring.Settings(**SETTINGS).signature(ensemble)).records
    videos = [(n, p) for n, p in named(folder) if n in ("pair.mp4", "short.mp4")]
    details = scoring.tables(videos, records, stacked, scoring.Settings(**SETTINGS), "")[1].set_index("filename")
    for name, _ in videos:
        frame, sequence = details.loc[name, ["score_lite0", "score_lrnet_ffpp"]]
        expected = expit(0.2 + 0.8 * logit(frame) + (-0.9 if np.isnan(sequence) else 1.3 * logit(sequence)))
        assert details.loc[name, "label"] == pytest.approx(np.clip(expected, 0.01, 0.99), abs=1e-5)
    assert np.isnan(details.loc["short.mp4", "score_lrnet_ffpp"])  # LRNet abstained: its indicator counted
    # the detail file's scores are the same stacked or not (each model's calibrated score); only the label differs
    plain = plain.loc[["pair.mp4", "short.mp4"]]
    pd.testing.assert_frame_equal(details.filter(like="score_"), plain.filter(like="score_"), check_exact=False, atol=1e-6)
    assert abs(details.loc["pair.mp4", "label"] - plain.loc["pair.mp4", "label"]) > 0.01
    assert scoring.Settings().signature(stacked)["stacking"] == file_digest(path)
