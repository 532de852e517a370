import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocessing import video
from preprocessing.video import VideoReadError, find_videos, read_frames, sample_indices
from tests.clips import frame_number, lie_about_length, numbered_frames, rotate_clip, write_clip

FFPP_ORIGINAL = "ffpp/original_sequences/youtube/c40/videos/183.mp4"
stream = video._stream


@pytest.mark.parametrize(
    "count, n, expected",
    [
        (300, 4, [0, 100, 199, 299]),
        (10, 32, list(range(10))),
        (32, 32, list(range(32))),
        (1, 5, [0]),
        (0, 5, []),
        (100, 0, []),
    ],
)
def test_sample_indices(count, n, expected):
    assert sample_indices(count, n).tolist() == expected


def test_sample_indices_are_distinct_evenly_spaced_and_span_the_video():
    for count in (33, 64, 299, 300, 1001):
        idx = sample_indices(count, 32)
        assert len(idx) == 32 and len(set(idx.tolist())) == 32
        assert idx[0] == 0 and idx[-1] == count - 1
        gaps = np.diff(idx)
        assert gaps.max() - gaps.min() <= 1


def test_streamed_frames_equal_sequentially_decoded_ones(data_dir):
    path = data_dir / FFPP_ORIGINAL
    frames = read_frames(path, 8)
    assert len(frames) == 8 and frames.frame_count == 390 and frames.fps == pytest.approx(30)
    assert frames.indices.tolist() == sample_indices(390, 8).tolist()
    wanted, oracle = set(frames.indices.tolist()), {}
    capture = cv2.VideoCapture(str(path))
    for i in range(390):
        ok, bgr = capture.read()
        assert ok
        if i in wanted:
            oracle[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    for index, image in zip(frames.indices, frames.images):
        assert image.shape == (720, 1280, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, oracle[int(index)])


def test_streaming_skips_the_frames_no_one_reads_and_keeps_the_wanted_pixels(data_dir, caplog):
    """A DFDC clip (1080p H.264 with B-frames): the decoder skips the frames that are neither wanted
    nor referenced (about half of them), and the 32 spread frames are still exactly the pixels of a
    decode of every frame, each at its own index."""
    path = sorted((data_dir / "dfdc/train_sample_videos").glob("*.mp4"))[0]
    with caplog.at_level("DEBUG", logger="preprocessing.video"):
        frames = read_frames(path, 32, seek=False)
    streamed, decoded, kept = next(r.args[1:] for r in caplog.records if r.msg == video.DECODED)
    assert streamed == frames.frame_count == 300 and kept == 32
    assert 32 <= decoded < 0.6 * streamed
    assert frames.indices.tolist() == sample_indices(300, 32).tolist()
    capture, wanted = cv2.VideoCapture(str(path)), set(frames.indices.tolist())
    oracle = {i: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) for i, (ok, bgr) in enumerate(iter(capture.read, (False, None)))
              if i in wanted}
    assert sorted(oracle) == frames.indices.tolist()
    for index, image in zip(frames.indices, frames.images):
        np.testing.assert_array_equal(image, oracle[int(index)])


def test_the_decoder_runs_on_the_threads_it_is_given(data_dir):
    """``set_decoder_threads``: one thread decodes with fewer threads alive in the process than two,
    and the pixels do not change (a worker decodes on its share of the CPUs)."""
    path = sorted((data_dir / "dfdc/train_sample_videos").glob("*.mp4"))[0]

    def peak_threads(count: int) -> tuple[int, np.ndarray]:
        video.set_decoder_threads(count)
        seen, done = [], threading.Event()

        def poll() -> None:  # the threads alive in this process, every millisecond
            while not done.is_set():
                seen.append(len(os.listdir("/proc/self/task")))
                time.sleep(0.001)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            frames = read_frames(path, 8, seek=False)
        finally:
            done.set()
            poller.join()
            video.set_decoder_threads(0)
        return max(seen), np.stack(frames.images)

    (one, pixels), (two, same) = peak_threads(1), peak_threads(2)
    assert one < two
    np.testing.assert_array_equal(pixels, same)


def concatenated(clips: list[Path], path: Path) -> Path:
    """The clips one after another, re-encoded into one MPEG-4 file (a keyframe every 12 frames)."""
    captures = [cv2.VideoCapture(str(c)) for c in clips]
    return write_clip(path, [bgr for capture in captures for ok, bgr in iter(capture.read, (False, None)) if ok], 25)


@pytest.mark.parametrize("clip, n", [("long", 6), (FFPP_ORIGINAL, 4)])
def test_seeking_gives_the_streamed_indices_and_pixels(data_dir, tmp_path, monkeypatch, clip, n):
    """A long video (shared face clips end to end) is read by seeking: same frames as streaming.
    So is a real H.264 clip (with B-frames) when seeking is asked for."""
    if clip == "long":
        path = concatenated(sorted((data_dir / "dfdc_face_crops").rglob("*.mp4"))[:4], tmp_path / "long.mp4")
    else:
        path = data_dir / clip
    streamed = read_frames(path, n, seek=False)
    assert streamed.frame_count > video.SEEK_GAP * n  # long enough for seeking to be chosen
    streams = []
    monkeypatch.setattr(video, "_stream", lambda *a: streams.append(1) or stream(*a))
    sought = read_frames(path, n)
    assert not streams  # the seeking path, and it did not fall back
    assert sought.indices.tolist() == streamed.indices.tolist() == sample_indices(streamed.frame_count, n).tolist()
    assert sought.frame_count == streamed.frame_count
    for a, b in zip(sought.images, streamed.images, strict=True):
        np.testing.assert_array_equal(a, b)


def test_short_video_gives_every_frame_once(tmp_path):
    path = write_clip(tmp_path / "short.mp4", numbered_frames(10))
    frames = read_frames(path, 32)
    assert frames.indices.tolist() == list(range(10))
    assert [frame_number(im) for im in frames.images] == list(range(10))


@pytest.mark.parametrize("seek", [None, True])
@pytest.mark.parametrize("declared", [60, 5, 1])
def test_lying_frame_count_is_corrected_without_desync(tmp_path, declared, seek):
    honest = write_clip(tmp_path / "honest.avi", numbered_frames(20), fourcc="MJPG")
    path = lie_about_length(honest, tmp_path / f"claims_{declared}.avi", declared)
    assert cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT) == declared
    frames = read_frames(path, 8, seek=seek)
    assert frames.frame_count == 20
    assert frames.indices.tolist() == sample_indices(20, 8).tolist()
    assert [frame_number(im) for im in frames.images] == frames.indices.tolist()


@pytest.mark.parametrize("seek", [None, False, True])
def test_one_frame_is_the_first_and_the_declared_length_stands(tmp_path, seek, caplog):
    """A one-frame read wants frame 0, not the last: the frames after it are no sign of a lying
    container (it used to be reported as one of 1 frame, 'resampled')."""
    path = write_clip(tmp_path / "clip.avi", numbered_frames(30), fourcc="MJPG")
    with caplog.at_level("INFO", logger="preprocessing.video"):
        frames = read_frames(path, 1, seek=seek)
    assert frames.indices.tolist() == [0] and frame_number(frames.images[0]) == 0
    assert frames.frame_count == 30 and not caplog.records


def test_vertical_video_stays_vertical(tmp_path):
    path = write_clip(tmp_path / "vertical.mp4", numbered_frames(6, height=192, width=108))
    frames = read_frames(path, 3)
    assert frames.images[0].shape == (192, 108, 3)


def test_rotation_metadata_is_applied(tmp_path):
    plain = write_clip(tmp_path / "plain.mp4", numbered_frames(6, height=120, width=200))
    frames = read_frames(rotate_clip(plain, tmp_path / "rotated.mp4"), 3)
    image = frames.images[0]
    assert image.shape == (200, 120, 3)  # shown upright: 90° clockwise, so width and height swap
    red_corner = image[:20, -20:].mean(axis=(0, 1))  # the top-left marker is now top-right
    assert red_corner[0] > 200 and red_corner[2] < 60
    assert [frame_number(im) for im in frames.images] == frames.indices.tolist()


def bad_file(kind: str, data_dir: Path, folder: Path) -> Path:
    """A file of one unreadable ``kind``: missing, zero-byte, random-bytes or truncated."""
    path = folder / f"{kind}.mp4"
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(50_000))
    elif kind == "truncated":
        data = (data_dir / FFPP_ORIGINAL).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "kind, cause",
    [("missing", "no such file"), ("zero-byte", "empty file"), ("random-bytes", "not a readable video"),
     ("truncated", "not a readable video")],
)
def test_unreadable_files_raise_a_typed_error_naming_the_file(data_dir, tmp_path, kind, cause):
    path = bad_file(kind, data_dir, tmp_path)
    with pytest.raises(VideoReadError, match=cause) as info:
        read_frames(path, 4)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_find_videos_matches_extensions_case_insensitively(tmp_path):
    for name in ["a.mp4", "b.MOV", "sub/c.avi", "notes.txt", "d.mp4.part"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_videos(tmp_path)] == ["a.mp4", "b.MOV", "sub/c.avi"]
