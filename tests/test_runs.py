"""Runs of consecutive frames (a sequence model's input) read by the same decode as the spread frames."""
import cv2
import numpy as np
import pytest

from preprocessing.video import read_frames, run_starts, sample_indices
from tests.clips import frame_number, lie_about_length, numbered_frames, write_clip

CLIP = "dfdc_face_crops/FAKE/0_aaqaifqrwn.mp4_0_0.mp4"  # 149 frames, 256 x 256, H.264


@pytest.mark.parametrize("count, runs, expected", [
    (300, 3, [35, 135, 235]),  # each centred in a third of the video
    (75, 3, [3, 41]),  # two whole runs fit
    (30, 3, [0]),
    (29, 3, []),  # shorter than one run
    (300, 0, []),
])
def test_runs_are_spread_over_the_video_and_as_many_as_fit(count, runs, expected):
    assert run_starts(count, runs, 30).tolist() == expected


def test_runs_never_overlap_nor_leave_the_video():
    for count in range(30, 400, 7):
        starts = run_starts(count, 3, 30)
        assert len(starts) == min(3, count // 30)
        assert starts[0] >= 0 and starts[-1] + 30 <= count and (np.diff(starts) >= 30).all()


@pytest.mark.parametrize("seek", [False, True])
def test_one_decode_gives_the_spread_frames_and_the_runs_pixel_exact(data_dir, seek):
    path = data_dir / CLIP
    frames = read_frames(path, 8, runs=3, seek=seek)
    assert frames.indices.tolist() == sample_indices(149, 8).tolist()  # the frame models' frames, unchanged
    assert [run.indices.tolist() for run in frames.runs] == [list(range(s, s + 30)) for s in (9, 59, 109)]
    wanted = set(frames.indices.tolist()) | {i for run in frames.runs for i in run.indices.tolist()}
    oracle, capture = {}, cv2.VideoCapture(str(path))
    for i in range(max(wanted) + 1):
        ok, bgr = capture.read()
        if i in wanted:
            oracle[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    for part in (frames, *frames.runs):
        assert (part.frame_count, part.fps) == (149, pytest.approx(25))
        for index, image in zip(part.indices, part.images, strict=True):
            np.testing.assert_array_equal(image, oracle[int(index)])


def test_runs_follow_the_true_length_of_a_lying_container(tmp_path):
    honest = write_clip(tmp_path / "honest.avi", numbered_frames(30), fourcc="MJPG")
    path = lie_about_length(honest, tmp_path / "claims_90.avi", 90)
    frames = read_frames(path, 4, runs=3)
    assert frames.frame_count == 30 and len(frames.runs) == 1
    assert [frame_number(image) for image in frames.runs[0].images] == list(range(30))


def test_a_clip_shorter_than_one_run_has_none(tmp_path):
    frames = read_frames(write_clip(tmp_path / "short.mp4", numbered_frames(20)), 8, runs=3)
    assert len(frames) == 8 and frames.runs == []
