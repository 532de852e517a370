"""``preprocessing.prepare`` end to end on real FF++ pairs: the contract's tables and files, aligned
crops, masks that sit on the face, resuming after a kill, unreadable videos."""
import dataclasses
import json
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

from preprocessing.masks import share_inside
from preprocessing.prepare import PrepareConfig, PrepareError, in_shard, main, prepare
from tests.conftest import REPO, assert_group_ends, link_tree

FRAMES = 4
#: Original 183 (390 frames) and the four fakes made from it; Face2Face/183_253 has 501 frames, so it
#: is not frame-aligned with 183 and must be cropped with its own detections.
PAIR = ["original_sequences/youtube/c40/videos/183.mp4"] + [
    f"manipulated_sequences/{m}/c40/videos/183_253.mp4"
    for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")]
#: Three frame-aligned c23 pairs, for the kill-and-rerun test.
C23 = [f"original_sequences/youtube/c23/videos/{x}.mp4" for x in ("004", "519", "634")] + [
    "manipulated_sequences/NeuralTextures/c23/videos/004_982.mp4",
    "manipulated_sequences/Deepfakes/c23/videos/519_515.mp4",
    "manipulated_sequences/FaceSwap/c23/videos/634_660.mp4"]
# Written out here, not imported, so a drift from the contract in the brief fails a test.
VIDEO_COLUMNS = ["video", "path", "label", "original", "dataset", "method", "group", "fold", "frame_count",
                 "width", "height", "status", "boxes_from"]
CROP_COLUMNS = ["video", "crop", "mask", "real_crop", "frame", "track", "label", "group", "fold"] + [
    f"lm{i}_{a}" for i in range(5) for a in "xy"]


@pytest.fixture(scope="module", autouse=True)
def module_on_one_torch_thread():
    """MTCNN on a busy 2-core machine is 6-9x faster on one torch thread than on two (the module-scoped
    twin of conftest's ``one_torch_thread``, for the module-scoped ``prepared`` fixture)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return tuple(pd.read_csv(out / name, keep_default_na=False) for name in ("videos.csv", "crops.csv"))


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("prepare")
    root = link_tree(data_dir / "ffpp", base / "root", PAIR)
    config = PrepareConfig("ffpp", str(root), str(base / "out"), frames=FRAMES, workers=0, folds=2)
    summary = prepare(config)
    videos, crops = read_tables(base / "out")
    return config, summary, videos.set_index("video"), crops


def record(out, video: str) -> dict:
    return json.loads((Path(out) / "crops" / video / "faces.json").read_text())


def method_of(video: str) -> str:
    return video.split("/")[1] if video.startswith("manipulated") else "original"


def test_tables_and_files_follow_the_contract(prepared):
    config, summary, videos, crops = prepared
    out = Path(config.out)
    assert [videos.index.name, *videos.columns] == VIDEO_COLUMNS and list(crops.columns) == CROP_COLUMNS
    assert len(videos) == 5 and (videos["status"] == "ok").all()
    assert videos["path"].map(os.path.isabs).all()
    assert set(videos["method"]) == {"", "Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"}
    assert (videos[["frame_count", "width", "height"]].loc[PAIR[0][:-4]] == [390, 1280, 720]).all()
    for row in crops.itertuples():
        assert row.crop == f"crops/{row.video}/{row.frame:05d}_{row.track}.png"
        assert row.mask in ("", f"crops/{row.video}/{row.frame:05d}_{row.track}_mask.png")
        assert (out / row.crop).is_file() and (not row.mask or (out / row.mask).is_file())
    merged = crops.merge(videos[["label", "group", "fold"]], left_on="video", right_index=True, suffixes=("", "_video"))
    for column in ("label", "group", "fold"):
        assert (merged[column] == merged[f"{column}_video"]).all()
    assert json.loads((out / "config.json").read_text())["frames"] == FRAMES
    written = json.loads((out / "summary.json").read_text())
    assert written["videos"] == 5 and written["crops"] == len(crops) == summary.crops
    assert written["masks"] == (crops["mask"] != "").sum() == 3 * FRAMES


def test_fakes_use_the_originals_boxes_unless_frame_counts_differ(prepared):
    config, _, videos, crops = prepared
    boxes_from = {method_of(v): b for v, b in videos["boxes_from"].items()}
    assert boxes_from == {"original": "self", "Deepfakes": "original", "FaceSwap": "original",
                          "NeuralTextures": "original", "Face2Face": "self"}
    assert videos.loc[PAIR[2][:-4], "frame_count"] == 501
    assert "501 frames, original has 390" in record(config.out, PAIR[2][:-4])["self_boxed_because"]
    unaligned = crops[crops["video"].map(method_of).isin(["original", "Face2Face"])]
    assert len(unaligned) and (unaligned[["mask", "real_crop"]] == "").all().all()  # no mask on reals or self-boxed


@pytest.mark.parametrize("method", ["Deepfakes", "FaceSwap", "NeuralTextures"])
def test_real_and_fake_crops_are_pixel_aligned(prepared, method):
    out = Path(prepared[0].out)
    video = f"manipulated_sequences/{method}/c40/videos/183_253"
    real = {(f["frame"], f["track"]): f for f in record(out, PAIR[0][:-4])["faces"]}
    fake = record(out, video)["faces"]
    assert len(fake) == len(real) == FRAMES
    for face in fake:
        original = real[(face["frame"], face["track"])]
        assert face["crop_box"] == original["crop_box"] and face["box"] == original["box"]
        assert face["real_crop"] == original["crop"]
        a, b = (cv2.imread(str(out / name)).astype(int) for name in (face["crop"], original["crop"]))
        assert a.shape == b.shape
        assert np.abs(a - b).max() > 50  # the face was swapped or re-rendered
        # Around the face (the crop's outer tenth) the two videos agree best with no shift at all.
        k = max(1, min(a.shape[:2]) // 10)
        ring = np.ones(a.shape[:2], bool)
        ring[k:-k, k:-k] = False
        errors = {shift: np.abs(a - np.roll(b, shift, axis=(0, 1)))[ring].mean()
                  for shift in [(0, 0), (2, 0), (0, 2), (-2, 0), (0, -2)]}
        assert min(errors, key=errors.get) == (0, 0), errors


def face_masks(out: Path, video: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mask, face box in crop pixels) per crop of ``video``."""
    result = []
    for face in record(out, video)["faces"]:
        x, y = face["crop_box"][:2]
        mask = cv2.imread(str(out / face["mask"]), cv2.IMREAD_GRAYSCALE)
        result.append((mask, np.subtract(face["box"], [x, y, x, y])))
    return result


@pytest.mark.parametrize("method", ["Deepfakes", "FaceSwap"])
def test_face_swap_masks_lie_inside_the_face_box(prepared, method):
    out = Path(prepared[0].out)
    masks = face_masks(out, f"manipulated_sequences/{method}/c40/videos/183_253")
    for mask, box in masks:
        assert (mask > 0).mean() > 0.05  # a swapped face shows up
        assert share_inside(mask, box) >= 0.8


def test_face_swap_masks_are_larger_than_neural_textures_mouth_masks(prepared):
    out = Path(prepared[0].out)
    area = {m: [(mask > 0).mean() for mask, _ in face_masks(out, f"manipulated_sequences/{m}/c40/videos/183_253")]
            for m in ("Deepfakes", "FaceSwap", "NeuralTextures")}
    for deepfakes, faceswap, neural in zip(*area.values()):  # same original, same frame, same track
        assert min(deepfakes, faceswap) > 2 * neural > 0


def test_landmarks_are_in_crop_pixels(prepared):
    config, _, _, crops = prepared
    for row in crops.itertuples():
        faces = record(config.out, row.video)["faces"]
        face = next(f for f in faces if (f["frame"], f["track"]) == (row.frame, row.track))
        points = np.array([[getattr(row, f"lm{i}_x"), getattr(row, f"lm{i}_y")] for i in range(5)])
        np.testing.assert_allclose(points, np.subtract(face["landmarks"], face["crop_box"][:2]), atol=0.01)
        height, width = cv2.imread(str(Path(config.out) / row.crop)).shape[:2]
        assert (points >= 0).all() and (points[:, 0] < width).all() and (points[:, 1] < height).all()
        (left_eye, right_eye, nose, left_mouth, right_mouth) = points
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


@pytest.fixture
def prepared_copy(prepared, tmp_path) -> PrepareConfig:
    """``prepared``'s config, pointed at a copy of its output: a test may rerun it without changing
    what the other tests of this module read."""
    shutil.copytree(prepared[0].out, tmp_path / "out", symlinks=True)
    return dataclasses.replace(prepared[0], out=str(tmp_path / "out"))


def test_rerun_resumes_everything_and_rewrites_the_same_tables(prepared, prepared_copy):
    _, _, videos, crops = prepared
    config = prepared_copy
    summary = prepare(config)
    assert (summary.prepared, summary.resumed) == (0, 5)
    again_videos, again_crops = read_tables(Path(config.out))
    pd.testing.assert_frame_equal(again_videos, videos.reset_index())
    pd.testing.assert_frame_equal(again_crops, crops)


def test_resuming_with_other_settings_is_refused(prepared_copy, caplog):
    config = prepared_copy
    with pytest.raises(PrepareError, match=r"prepared with frames=4 \(now 5\).*--overwrite"):
        prepare(PrepareConfig(config.dataset, config.root, config.out, frames=5, workers=0))
    args = ["--dataset", "ffpp", "--root", config.root, "--out", config.out, "--frames", "4", "--mask", "ssim"]
    assert main(args) == 2
    assert "mask='pixel' (now 'ssim')" in caplog.text


@pytest.mark.parametrize("stop", ["machine dies", "sigterm"])
def test_killed_run_resumes_without_duplicated_or_lost_rows(data_dir, tmp_path, stop):
    """Killed with its workers (SIGKILL to the group, as when a machine dies), or stopped by SIGTERM to
    the command alone, which must stop its workers and exit 143: the next run resumes either way."""
    root = link_tree(data_dir / "ffpp", tmp_path / "root", C23)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "preprocessing.prepare", "--dataset", "ffpp", "--root", str(root),
               "--out", str(out), "--frames", str(FRAMES), "--workers", "2", "--folds", "3"]
    with open(tmp_path / "log.txt", "w") as log:
        run = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 120
        while not list(out.glob("crops/**/faces.json")):
            assert run.poll() is None and time.monotonic() < deadline, (tmp_path / "log.txt").read_text()
            time.sleep(0.05)
        if stop == "machine dies":
            os.killpg(run.pid, signal.SIGKILL)
            assert run.wait() == -signal.SIGKILL
        else:
            run.terminate()
            assert run.wait(timeout=120) == 143, (tmp_path / "log.txt").read_text()
            assert_group_ends(run.pid)
    done = {p: p.stat().st_mtime_ns for p in out.glob("crops/**/faces.json")}
    assert 0 < len(done) < len(C23) and not (out / "videos.csv").exists()

    summary = prepare(PrepareConfig("ffpp", str(root), str(out), frames=FRAMES, workers=0, folds=3))
    assert (summary.resumed, summary.prepared) == (len(done), len(C23) - len(done))
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished videos were not redone
    videos, crops = read_tables(out)
    assert sorted(videos["video"]) == sorted(c[:-4] for c in C23) and (videos["status"] == "ok").all()
    assert not crops.duplicated(["video", "frame", "track"]).any()
    assert (videos["boxes_from"] == ["original"] * 3 + ["self"] * 3).all()
    on_disk = {p.relative_to(out).as_posix() for p in out.glob("crops/**/*.png")}
    listed = set(crops["crop"]) | set(crops["mask"][crops["mask"] != ""])
    assert on_disk == listed  # no orphan file from the killed run, no row without its file
    assert not list(out.rglob("*.tmp"))
    assert len(crops) == sum(len(record(out, v)["faces"]) for v in videos["video"]) == len(C23) * FRAMES


def test_unreadable_video_is_reported_kept_out_of_crops_and_retried(data_dir, tmp_path):
    clip = "dfdc_face_crops/REAL/0_aayrffkzxn.mp4_0_0.mp4"
    root = link_tree(data_dir, tmp_path / "root", [clip])
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    pd.DataFrame({"path": [clip, "broken.mp4"], "label": ["REAL", "FAKE"]}).to_csv(root / "labels.csv", index=False)
    config = PrepareConfig("folder", str(root), str(tmp_path / "out"), frames=2, workers=0, folds=2)

    summary = prepare(config)
    videos, crops = read_tables(tmp_path / "out")
    status = videos.set_index("video")["status"]
    assert status["broken"].startswith("failed: ") and status[clip[:-4]] == "ok"
    assert list(summary.failures) == ["broken"] and summary.failures["broken"] == status["broken"][8:]
    assert set(crops["video"]) == {clip[:-4]} and len(crops) == 2
    assert videos.set_index("video").loc["broken", "frame_count"] == ""

    again = prepare(config)
    assert (again.resumed, again.prepared, list(again.failures)) == (1, 1, ["broken"])


@pytest.mark.parametrize("args, message", [
    (["--shard", "4/4"], "K must be in 0..N-1"),
    (["--shard", "two"], "must look like K/N"),
    (["--frames", "0"], "need frames >= 1"),
])
def test_bad_settings_get_a_clear_error(tmp_path, caplog, args, message):
    assert main(["--dataset", "ffpp", "--root", str(tmp_path), "--out", str(tmp_path / "out"), *args]) == 2
    assert message in caplog.text


def test_shards_split_the_groups_between_machines_without_overlap():
    groups = pd.Series([f"ffpp:youtube:{i:03d}" for i in range(200)] * 3)  # each group three times
    shards = [in_shard(groups, f"{k}/4") for k in range(4)]
    assert (sum(s.astype(int) for s in shards) == 1).all()  # every row in exactly one shard
    for shard in shards:
        assert shard.groupby(groups).nunique().eq(1).all()  # a group is never split
        assert 30 < shard.sum() / 3 < 70  # about a quarter of the 200 groups each
