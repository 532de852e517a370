"""The extract_faces command on a real clip mixed with broken files."""
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import pytest

from preprocessing import extract_faces
from tests.test_video import FFPP_ORIGINAL, bad_file

BAD = ("zero-byte", "random-bytes", "truncated")


@pytest.fixture
def folder(data_dir, tmp_path):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    shutil.copy(data_dir / FFPP_ORIGINAL, videos / "sub" / "183.mp4")
    for kind in BAD:
        bad_file(kind, data_dir, videos)
    (videos / "notes.txt").write_text("not a video")
    return videos


def test_extracts_good_videos_reports_bad_ones_and_resumes(folder, tmp_path, caplog):
    out = tmp_path / "faces"
    argv = ["--videos", str(folder), "--out", str(out), "--frames", "6"]
    with caplog.at_level(logging.WARNING):
        assert extract_faces.main(argv) == 0

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for kind in BAD:
        assert sum(f"{kind}.mp4" in w for w in warnings) == 1, warnings
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["videos"], summary["done"], summary["resumed"]) == (4, 1, 0)
    assert sorted(summary["failures"]) == sorted(str(folder / f"{k}.mp4") for k in BAD)

    meta = json.loads((out / "sub/183.mp4/faces.json").read_text())
    assert meta["frame_count"] == 390 and len(meta["frames"]) == 6 and meta["tracks"] == 1
    assert len(meta["faces"]) == 6 and summary["faces"] == 6
    for face in meta["faces"]:
        crop = cv2.imread(str(out / "sub/183.mp4" / face["crop"]))
        x1, y1, x2, y2 = face["crop_box"]
        assert crop.shape == (y2 - y1, x2 - x1, 3)
        assert face["crop"] == f"{face['frame']:05d}_{face['track']}.png" and face["frame"] in meta["frames"]
        assert len(face["landmarks"]) == 5 and face["score"] >= 0.9
    assert not list(out.rglob("*.tmp"))

    written = (out / "sub/183.mp4/faces.json").stat().st_mtime_ns
    assert extract_faces.main(argv) == 0
    again = json.loads((out / "summary.json").read_text())
    assert (again["done"], again["resumed"], len(again["failures"])) == (0, 1, 3)
    assert (out / "sub/183.mp4/faces.json").stat().st_mtime_ns == written


def test_an_unfinished_video_is_redone(folder, tmp_path, monkeypatch):
    out = tmp_path / "faces"
    argv = ["--videos", str(folder / "sub" / "183.mp4"), "--out", str(out), "--frames", "3"]
    assert extract_faces.main(argv) == 0
    (out / "183.mp4" / "faces.json").unlink()  # as if killed before the video was finished
    (out / "183.mp4" / "99999_0.png").write_bytes(b"stale")
    finals = []  # the final names files are renamed onto, in order (every write is atomic)
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda tmp, final: finals.append(Path(final).name) or replace(tmp, final))
    assert extract_faces.main(argv) == 0
    video = [name for name in finals if name != "summary.json"]
    assert len(video) == 4 and video[-1] == "faces.json"  # three crops, then the mark of a finished video
    assert not (out / "183.mp4" / "99999_0.png").exists()
    assert len(json.loads((out / "183.mp4" / "faces.json").read_text())["faces"]) == 3


def test_default_run_extracts_the_embedded_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert extract_faces.main(["--frames", "4"]) == 0
    tracks = {name: json.loads((tmp_path / "output/faces" / name / "faces.json").read_text())["tracks"]
              for name in ("astronaut.mp4", "astronaut_pair.mp4")}
    assert tracks == {"astronaut.mp4": 1, "astronaut_pair.mp4": 2}
