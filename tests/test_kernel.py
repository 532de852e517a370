"""The inference kernel: aggregation rules, the time budget, and whole runs on real clips."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from kernels import inputs, predict, runner, scoring
from kernels.aggregate import aggregate, confident, mean, sharpen
from kernels.budget import Budget
from kernels.ensemble import Ensemble
from models.checkpoint import save_checkpoint
from preprocessing.sample import render_sample
from preprocessing.video import read_frames
from submission.io import read_submission, videos_in
from tests.conftest import assert_group_ends

REPO = Path(__file__).resolve().parents[1]
CLIPS = ["ffpp/original_sequences/youtube/c40/videos/183.mp4",
         "ffpp/manipulated_sequences/Deepfakes/c40/videos/183_253.mp4",
         "ffpp/original_sequences/youtube/c40/videos/469.mp4"]


@pytest.fixture(scope="session")
def ensemble(checkpoint) -> Ensemble:
    return Ensemble.load([checkpoint], precision="fp32")


@pytest.fixture
def folder(data_dir, tmp_path) -> Path:
    """Three real clips, an unreadable .mp4 and a text file."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for clip in CLIPS:
        shutil.copy(data_dir / clip, videos / Path(clip).name)
    (videos / "broken.mp4").write_bytes(b"\x00" * 1000)
    (videos / "readme.txt").write_text("not a video")
    return videos


def named(folder: Path) -> list[tuple[str, Path]]:
    return [(p.relative_to(folder).as_posix(), p) for p in sorted(folder.iterdir()) if p.suffix == ".mp4"]


# --- aggregation -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "probs, expected, branch",
    [
        ([0.9] * 12 + [0.1] * 8, 0.9, "over max(n/2.5, 11) frames above 0.8: their mean"),
        ([0.9] * 11 + [0.1] * 9, 0.9 * 11 / 20 + 0.1 * 9 / 20, "11 frames is not over 11: plain mean"),
        ([0.95] * 41 + [0.3] * 59, 0.95, "n = 100: 41 above is over 100 / 2.5 = 40: their mean"),
        ([0.95] * 40 + [0.3] * 60, 0.95 * 0.4 + 0.3 * 0.6, "n = 100: 40 above is not over 40: plain mean"),
        ([0.8] * 12 + [0.1] * 8, 0.8 * 0.6 + 0.1 * 0.4, "exactly 0.8 does not exceed 0.8: plain mean"),
        ([0.2] * 19 + [0.6], 0.2 * 0.95 + 0.6 * 0.05, "exactly 0.2 is not below 0.2: plain mean"),
        ([0.1] * 19 + [0.6], 0.1, "over 90% below 0.2: their mean"),
        ([0.1] * 18 + [0.6] * 2, (0.1 * 18 + 1.2) / 20, "exactly 90% below: plain mean"),
    ],
)
def test_confident_rule_branches(probs, expected, branch):
    assert confident(np.array(probs)) == pytest.approx(expected), branch


def test_sharpen_pushes_away_from_half_and_weights_by_confidence():
    assert sharpen(np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert sharpen(np.array([0.7])) == pytest.approx(0.5 + 0.2 ** 0.65)
    probs = np.array([0.9, 0.55, 0.6])
    weights = np.abs(probs - 0.5) + 1e-4
    sharpened = np.minimum(0.5 + np.abs(probs - 0.5) ** 0.65, 0.99)
    assert sharpen(probs) == pytest.approx((sharpened * weights).sum() / weights.sum())
    assert sharpen(1 - probs) == pytest.approx(1 - sharpen(probs))  # symmetric about 0.5
    assert sharpen(np.array([0.999])) == pytest.approx(0.99)  # clipped


def test_tracks_are_scored_separately():
    probs = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.95])
    tracks = np.array([0, 0, 0, 1, 1, 1])
    assert aggregate(probs, tracks, "trackmax") == pytest.approx(np.mean([0.9, 0.8, 0.95]))
    assert aggregate(probs, tracks, "mean") == pytest.approx(np.mean([0.2, np.mean([0.9, 0.8, 0.95])]))
    assert aggregate(probs, np.zeros(6), "mean") == pytest.approx(mean(probs))
    with pytest.raises(ValueError, match="unknown strategy 'max'.*confident"):
        aggregate(probs, tracks, "max")


# --- budget ------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_budget_lowers_frames_to_fit_and_stops_at_the_deadline():
    clock = FakeClock()
    budget = Budget(20.0, reserve=0.0, clock=clock)
    assert budget.frames_for_next(10, 32, 8) == 32  # nothing measured yet
    budget.record(32, 3.2)  # 0.1 s per frame, no fixed cost known yet
    clock.now += 10.0  # 10 s left for 10 videos: 1 s each -> 10 frames
    assert budget.frames_for_next(10, 32, 8) == 10
    assert budget.frames_for_next(100, 32, 8) == 8  # floor
    assert budget.frames_for_next(1, 32, 8) == 32  # cap
    clock.now += 10.0
    assert budget.frames_for_next(1, 32, 8) == 0  # no time left: prior


def test_budget_separates_fixed_and_per_frame_cost():
    budget = Budget(None, clock=FakeClock())
    budget.record(32, 4.2)
    budget.record(16, 2.6)
    assert budget.cost_model() == pytest.approx((1.0, 0.1))
    assert budget.frames_for_next(5, 32, 8) == 32  # no deadline: always the most


# --- whole runs --------------------------------------------------------------------------------

def test_the_device_failing_stops_the_run_with_what_was_scored_kept_and_resumable(folder, checkpoint, tmp_path,
                                                                                  monkeypatch, caplog):
    """Out of memory while scoring the second video: exit code 4 and one error line, never the prior
    for every video after it; the submission is valid, the first video's score is kept, and the same
    command resumes from there."""
    out, predicted = tmp_path / "submission.csv", []
    original = Ensemble.predict

    def out_of_memory_once(self, cuts):
        predicted.append(1)
        if len(predicted) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, cuts)

    monkeypatch.setattr(Ensemble, "predict", out_of_memory_once)
    command = ["--videos", str(folder), "--out", str(out), "--weights", str(checkpoint), "--frames", "2",
               "--workers", "0", "--precision", "fp32"]
    assert predict.main(command) == 4
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "the device failed after 1 of 4 videos (OutOfMemoryError: CUDA out of memory" in errors[0]
    assert "rerun the same command to resume" in errors[0]
    submission = read_submission(out, videos_in(folder)).set_index("filename")["label"]
    details = pd.read_csv(runner.details_path(out)).set_index("filename")
    assert details.loc["183.mp4", "status"] == "ok" and submission["183.mp4"] != 0.5
    assert (details.drop(index="183.mp4")["reason"] == "not scored: the device failed").all()
    assert (submission.drop(index="183.mp4") == 0.5).all()
    caplog.clear()
    assert predict.main(command) == 0
    assert len(predicted) == 2 + 2  # resumed: only the two clips left were scored
    details = pd.read_csv(runner.details_path(out)).set_index("filename")
    assert (details.drop(index="broken.mp4")["status"] == "ok").all()


def test_a_nan_score_gives_its_video_the_prior_and_never_reaches_the_csv(folder, ensemble, tmp_path, monkeypatch):
    original = Ensemble.predict
    monkeypatch.setattr(Ensemble, "predict", lambda self, cuts: {name: probs * (np.nan if len(cuts) else 1)
                                                                 for name, probs in original(self, cuts).items()})
    out = tmp_path / "submission.csv"
    runner.run([("183.mp4", folder / "183.mp4")], ensemble, out, scoring.Settings(frames=2, workers=0))
    details = pd.read_csv(runner.details_path(out)).set_index("filename")
    assert details.loc["183.mp4", "status"] == "prior"
    assert details.loc["183.mp4", "reason"] == "non-finite probabilities from tiny (fp32)"
    assert read_submission(out)["label"].tolist() == [0.5]


def test_full_run_writes_a_complete_submission_and_consistent_details(folder, ensemble, tmp_path, caplog):
    out = tmp_path / "sub" / "submission.csv"
    settings = scoring.Settings(frames=4, workers=0)
    runner.run(named(folder), ensemble, out, settings)

    expected = ["183.mp4", "183_253.mp4", "469.mp4", "broken.mp4"]
    assert videos_in(folder) == expected
    submission = read_submission(out, expected)  # header, one row each, no NaN, in [0, 1]
    assert submission["filename"].tolist() == expected  # sorted
    assert submission["label"].between(0.01, 0.99).all()

    table = pd.read_csv(runner.details_path(out)).fillna({"reason": ""})
    assert table["filename"].tolist() == expected
    np.testing.assert_allclose(table["label"], submission["label"], atol=1e-6)
    broken = table.set_index("filename").loc["broken.mp4"]
    assert broken["status"] == "prior" and "not a readable video" in broken["reason"] and broken["label"] == 0.5
    assert any("broken.mp4" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    ok = table[table["status"] == "ok"]
    assert len(ok) == 3 and (ok["faces"] == 4).all() and (ok["tracks"] == 1).all() and (ok["frames_read"] == 4).all()
    np.testing.assert_allclose(ok["score_tiny"].clip(0.01, 0.99), ok["label"], atol=1e-6)

    records = [json.loads(line) for line in out.with_suffix(".progress.jsonl").read_text().splitlines()[1:]]
    for record in records:
        if record["status"] == "ok":
            expected_label = aggregate(record["probs"]["tiny"], record["track_ids"], "confident")
            assert table.set_index("filename").loc[record["filename"], "label"] == pytest.approx(expected_label, abs=1e-6)


def test_trackmax_scores_a_two_person_video_by_its_most_fake_face(ensemble, tmp_path):
    pair = render_sample(tmp_path / "sample")[1]
    out = tmp_path / "submission.csv"
    details = runner.run([(pair.name, pair)], ensemble, out, scoring.Settings(frames=6, workers=0, strategy="trackmax"))
    record = json.loads(out.with_suffix(".progress.jsonl").read_text().splitlines()[1])
    probs, tracks = np.array(record["probs"]["tiny"]), np.array(record["track_ids"])
    assert sorted(set(tracks.tolist())) == [0, 1]
    per_track = [probs[tracks == t].mean() for t in (0, 1)]
    assert per_track[0] != pytest.approx(per_track[1], abs=1e-7)  # the two faces do differ
    assert details["label"].iloc[0] == pytest.approx(max(per_track), abs=1e-6)


def test_a_short_deadline_still_yields_a_complete_submission_on_time(folder, ensemble, tmp_path):
    for i in range(16):  # more work than the deadline allows
        shutil.copy(folder / "183.mp4", folder / f"copy{i}.mp4")
    out = tmp_path / "submission.csv"
    deadline = 6.0
    started = time.monotonic()
    details = runner.run(named(folder), ensemble, out, scoring.Settings(frames=16, min_frames=4, workers=1, deadline=deadline),
                          started=started)
    elapsed = time.monotonic() - started
    assert elapsed < deadline + 1.0, f"took {elapsed:.1f} s for a {deadline} s deadline"
    submission = read_submission(out, videos_in(folder))
    assert len(submission) == 20
    unreached = details[details["reason"] == "not reached before the deadline"]
    assert len(unreached) >= 1 and (unreached["label"] == 0.5).all()


def kill_when(process: subprocess.Popen, moment, timeout: float = 120.0, terminate: bool = False) -> None:
    """SIGKILL ``process`` and its process group (its detection worker) as soon as ``moment()``
    holds, polled every 10 ms; fails if the process ends first or the moment never comes. With
    ``terminate``: SIGTERM to the process alone, which must exit with 143 and leave no process of its
    group behind (a worker it started would be orphaned)."""
    limit = time.monotonic() + timeout
    while not moment():
        assert process.poll() is None, "the run ended before the moment it was to be killed at"
        assert time.monotonic() < limit, "the moment to kill never came"
        time.sleep(0.01)
    if not terminate:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return
    process.terminate()
    assert process.wait(timeout=60) == 143
    assert_group_ends(process.pid)


def finished(progress: Path) -> list[str]:
    """The videos a resume log holds complete records of (a killed run may leave half a line)."""
    lines = progress.read_text().splitlines()[1:] if progress.exists() else []
    return [json.loads(line)["filename"] for line in lines if line.endswith("}")]


def start_kernel(folder: Path, out: Path, checkpoint: Path, workers: int, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "kernels.predict", "--videos", str(folder), "--out", str(out),
               "--weights", str(checkpoint), "--frames", "4", "--workers", str(workers), "--precision", "fp32"]
    return subprocess.Popen(command, cwd=out.parents[1], env={**os.environ, "PYTHONPATH": str(REPO)},
                            start_new_session=True, **kwargs)


def test_a_killed_run_resumes_without_redoing_videos(folder, checkpoint, ensemble, tmp_path):
    out = tmp_path / "killed" / "submission.csv"
    progress = out.with_suffix(".progress.jsonl")
    kill_when(start_kernel(folder, out, checkpoint, 0, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
              lambda: len(finished(progress)) >= 2)
    done_before = len(finished(progress))
    assert 2 <= done_before < 4, "the kill should land mid-run"
    assert len(read_submission(out, videos_in(folder))) == 4  # complete and valid even when killed

    rerun = start_kernel(folder, out, checkpoint, 0, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert f"resuming: {done_before} of 4 videos already done" in stderr
    assert sorted(finished(progress)) == sorted(set(finished(progress))) == videos_in(folder)  # each video once

    reference = runner.run(named(folder), ensemble, tmp_path / "reference" / "submission.csv",
                            scoring.Settings(frames=4, workers=0))
    resumed = read_submission(out)
    np.testing.assert_allclose(resumed["label"], reference["label"], atol=1e-6)


def test_kills_before_during_and_after_start_up_lose_and_repeat_nothing(folder, checkpoint, ensemble, tmp_path):
    """Three runs killed at moments told by their outputs, each checked to have landed there: before
    anything is written, once the all-prior submission is written but no video is done (the worker
    still starting), and once a video is done (by SIGTERM, which must stop the worker too); then a
    fourth run finishes the job."""
    out = tmp_path / "killed" / "submission.csv"
    progress = out.with_suffix(".progress.jsonl")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    kill_when(start_kernel(folder, out, checkpoint, 1, **quiet), lambda: True)  # still importing torch
    assert not out.parent.exists(), "the first kill should land before start-up"

    kill_when(start_kernel(folder, out, checkpoint, 1, **quiet), out.exists)
    assert len(read_submission(out, videos_in(folder))) == 4  # complete and valid from its first write
    assert finished(progress) == [], "the second kill should land during start-up"

    kill_when(start_kernel(folder, out, checkpoint, 1, **quiet), lambda: len(finished(progress)) >= 1, terminate=True)
    names = finished(progress)
    assert 1 <= len(names) < 4 and len(names) == len(set(names)), "the third kill should land mid-run"
    assert len(read_submission(out, videos_in(folder))) == 4

    last = start_kernel(folder, out, checkpoint, 1, **quiet)
    assert last.wait(timeout=300) == 0
    assert sorted(finished(progress)) == videos_in(folder)
    reference = runner.run(named(folder), ensemble, tmp_path / "reference" / "submission.csv",
                            scoring.Settings(frames=4, workers=0))
    np.testing.assert_allclose(read_submission(out)["label"], reference["label"], atol=1e-6)


@pytest.mark.parametrize("problem", ["missing", "truncated", "wrong-architecture"])
def test_bad_weights_fail_before_any_video_is_read(checkpoint, folder, tmp_path, caplog, problem):
    bad = tmp_path / f"{problem}.pt"
    if problem == "truncated":
        bad.write_bytes(checkpoint.read_bytes()[:5000])
    elif problem == "wrong-architecture":
        payload = torch.load(checkpoint, weights_only=True)
        payload["model"]["encoder"] = "mobilenetv3_small_075"
        torch.save(payload, bad)
    out = tmp_path / "submission.csv"
    assert predict.main(["--videos", str(folder), "--out", str(out), "--weights", str(bad)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert {"missing": "no such checkpoint", "truncated": "not a readable checkpoint",
            "wrong-architecture": "weights do not fit mobilenetv3_small_075"}[problem] in errors[0]
    assert not out.exists() and not out.with_suffix(".progress.jsonl").exists()


def test_bf16_is_used_when_asked_and_agrees_with_fp32_far_below_the_spread_of_scores(checkpoint, ensemble, data_dir):
    faces = [image for clip in sorted((data_dir / "dfdc_face_crops").rglob("*.mp4"))[1::2]
             for image in read_frames(clip, 1).images]  # one crop each of ten faces the model never saw
    bf16 = Ensemble.load([checkpoint], precision="bf16")
    assert bf16.precisions == ["bf16"]
    fp32, half = ensemble.predict(faces)["tiny"], bf16.predict(faces)["tiny"]
    spread = fp32.max() - fp32.min()
    assert spread > 0.2  # the faces' scores differ widely ...
    # ... bf16 really ran (its rounding shows), and it moves no score by a tenth of that spread (how
    # far bf16 rounding moves a score depends on the CPU's bf16 kernels: 0.013 on one machine here, under 0.01 on another)
    assert 0 < np.abs(fp32 - half).max() < 0.1 * spread


IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def reference_probs(checkpoint: Path, frames: list[np.ndarray], boxes: list[np.ndarray], margin: float = 0.3,
                    mean: np.ndarray = IMAGENET_MEAN, swap: bool = False) -> np.ndarray:
    """The fixture model's fp32 probability of the face in each RGB frame, computed without the
    kernel's cropping, resizing or normalising: its box (x1, y1, x2, y2) grows by ``margin`` of its
    size per side (snapped outward, clipped), the crop (its channels reversed if ``swap``) is shrunk
    to 64 px on its long side with INTER_AREA and centred on black, and normalised with ``mean`` and
    ImageNet's std."""
    from models.checkpoint import load_model

    batch = []
    for frame, (x1, y1, x2, y2) in zip(frames, boxes, strict=True):
        dx, dy = margin * (x2 - x1), margin * (y2 - y1)
        crop = frame[max(math.floor(y1 - dy), 0):math.ceil(y2 + dy), max(math.floor(x1 - dx), 0):math.ceil(x2 + dx)]
        crop = crop[..., ::-1] if swap else crop
        scale = 64 / max(crop.shape[:2])
        w, h = round(crop.shape[1] * scale), round(crop.shape[0] * scale)
        square = np.zeros((64, 64, 3), np.uint8)
        square[(64 - h) // 2:(64 - h) // 2 + h, (64 - w) // 2:(64 - w) // 2 + w] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
        batch.append(((square / 255.0 - mean) / IMAGENET_STD).transpose(2, 0, 1))
    with torch.no_grad():
        return torch.sigmoid(load_model(checkpoint)(torch.tensor(np.stack(batch), dtype=torch.float32))).numpy()


@pytest.fixture(scope="module")
def kernel_record(data_dir, ensemble, tmp_path_factory) -> dict:
    """The kernel's progress record of one real one-face clip at 4 frames, each searched in full
    (``detect_every=1``), so that MTCNN on the whole frame gives the reference the same boxes."""
    out = tmp_path_factory.mktemp("one") / "submission.csv"
    runner.run([("183.mp4", data_dir / CLIPS[0])], ensemble, out,
               scoring.Settings(frames=4, workers=0, detect_every=1))
    return json.loads(out.with_suffix(".progress.jsonl").read_text().splitlines()[1])


@pytest.fixture(scope="module")
def reference_faces(kernel_record, detector, data_dir) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The frames the kernel scored, decoded by OpenCV itself (every frame up to the last, BGR turned
    to RGB here), and MTCNN's one box in each (the detector is shared: finding boxes is not checked)."""
    capture, frames, wanted = cv2.VideoCapture(str(data_dir / CLIPS[0])), [], kernel_record["frame_ids"]
    for index in range(max(wanted) + 1):
        ok, frame = capture.read()
        assert ok
        if index in wanted:
            frames.append(np.ascontiguousarray(frame[..., ::-1]))
    boxes = [found.boxes.astype(np.float64)[0] for found in detector(frames)]
    return frames, boxes


@pytest.mark.parametrize("mistake", [None, "margin 0.2", "normalised with mean 0.5", "BGR"])
def test_the_kernel_scores_the_crops_an_independent_computation_gives(kernel_record, reference_faces, checkpoint, mistake):
    """The kernel's probabilities equal the independent :func:`reference_probs`; and the same
    reference with one mistake (a kernel that had it) misses them by far more than the tolerance."""
    variant = {None: {}, "margin 0.2": {"margin": 0.2}, "normalised with mean 0.5": {"mean": np.full(3, 0.5)},
               "BGR": {"swap": True}}[mistake]
    expected = reference_probs(checkpoint, *reference_faces, **variant)
    gap = np.abs(np.array(kernel_record["probs"]["tiny"]) - expected)
    if mistake is None:
        assert gap.max() < 1e-4
    else:
        assert gap.mean() > 1e-2, f"{mistake} would go unnoticed"


def test_shards_split_deterministically_and_cover_every_video():
    videos = [(f"v{i:02d}.mp4", Path(f"v{i:02d}.mp4")) for i in range(10)]
    parts = [inputs.shard(videos, f"{i}/3") for i in range(3)]
    assert sorted(sum(parts, [])) == videos and sum(map(len, parts)) == 10
    assert parts[1] == inputs.shard(videos, "1/3")
    with pytest.raises(ValueError, match="i/n"):
        inputs.shard(videos, "3/3")


def test_a_video_that_does_not_finish_in_time_gets_an_error_and_the_run_goes_on(data_dir):
    from kernels.pipeline import Cutting, iterate_faces
    from preprocessing.cropspec import CropSpec

    videos = [(f"v{i}.mp4", data_dir / CLIPS[0]) for i in range(3)]
    start = time.monotonic()
    # the spawned worker cannot even start within 0.2 s: every video times out, and the pool restarts
    results = list(iterate_faces(videos, lambda left: 4, lambda: math.inf, {}, Cutting((CropSpec((64, 64)),)), workers=1,
                                 queue_size=1, video_timeout=0.2))
    assert [r.filename for r in results] == ["v0.mp4", "v1.mp4", "v2.mp4"]
    assert all(r.error == "not finished after 0.2 s (decoder hung or worker died)" for r in results)
    assert time.monotonic() - start < 30


def test_the_workers_yield_the_cpus_to_the_models(data_dir):
    """Detection workers run on their share of the torch threads and below the scoring process's
    priority, so the models keep every core while they have work; the scoring process's own threads
    are left as they were."""
    from kernels.pipeline import WORKER_NICENESS, Cutting, Workers, iterate_faces
    from preprocessing.cropspec import CropSpec

    before = torch.get_num_threads()
    torch.set_num_threads(5)
    try:
        with Workers({}, 2) as workers:
            assert workers.threads == 2
            done = list(iterate_faces([("a.mp4", data_dir / CLIPS[0])], lambda left: 2, lambda: math.inf, {},
                                      Cutting((CropSpec((64, 64)),)), workers))
            assert done[0].error == "" and torch.get_num_threads() == 5
            ours = os.getpriority(os.PRIO_PROCESS, 0)
            niceness = {os.getpriority(os.PRIO_PROCESS, process.pid) for process in workers._pool._pool}
            assert niceness == {min(19, ours + WORKER_NICENESS)}
    finally:
        torch.set_num_threads(before)


def test_the_main_job_runs_on_its_embedded_default(tmp_path, monkeypatch):
    """`python -m kernels.predict` with no arguments: the rendered sample and the shipped default weights."""
    monkeypatch.chdir(tmp_path)
    assert predict.main(["--frames", "4", "--workers", "0"]) == 0
    details = pd.read_csv(tmp_path / "submission" / "submission_details.csv").set_index("filename")
    assert details.index.tolist() == ["astronaut.mp4", "astronaut_pair.mp4"]
    assert (details["status"] == "ok").all() and details["tracks"].tolist() == [1, 2]
    assert "score_lite0" in details  # the shipped checkpoint was used
    assert read_submission(tmp_path / "submission" / "submission.csv")["label"].between(0.01, 0.99).all()


@pytest.mark.usefixtures("cpu_only")  # the probe runs on CPUs only
def test_the_precision_verdict_is_cached_per_machine_and_checkpoint(checkpoint, tmp_path, monkeypatch):
    from kernels import ensemble as module

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("no native bf16 on this CPU: auto never probes")
    monkeypatch.setenv(module.CACHE_ENV, str(tmp_path / "cache"))
    probes = []
    probe = module._probe_verdict
    monkeypatch.setattr(module, "_probe_verdict", lambda *a: probes.append(1) or probe(*a))

    first = Ensemble.load([checkpoint]).precisions
    assert len(probes) == 1 and Ensemble.load([checkpoint]).precisions == first and len(probes) == 1
    verdicts = json.loads((tmp_path / "cache" / "precision.json").read_text())
    assert list(verdicts.values()) == first
    model = module.load_model(checkpoint, "cpu")
    with torch.no_grad():  # a retrained checkpoint: same file name, other weights
        next(model.parameters()).add_(1e-3)
    save_checkpoint(tmp_path / checkpoint.name, model)
    Ensemble.load([tmp_path / checkpoint.name])
    assert len(probes) == 2
    monkeypatch.setattr(module, "machine_id", lambda: "another machine")
    Ensemble.load([checkpoint])
    assert len(probes) == 3 and len(json.loads((tmp_path / "cache" / "precision.json").read_text())) == 3
