"""Reading evenly spaced frames from a video: by streaming, or for a long video by seeking.

Frames come out as upright RGB ``uint8`` arrays (``H x W x 3``): the container's rotation metadata is
applied, so a phone clip recorded sideways is returned the way it is shown. Streaming decodes with
PyAV, which lets the decoder skip the frames no one reads (:func:`_stream`); seeking and counting use
OpenCV's FFmpeg backend. Both give the same pixels for the same frame.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)

# Unreadable files are reported by this module as one VideoReadError each; keep FFmpeg's and
# OpenCV's own console messages about them ("moov atom not found", ...) out of the user's way.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.setLogLevel(2)  # errors only

#: File name endings treated as videos when a folder is scanned (case-insensitive).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
)


class VideoReadError(RuntimeError):
    """A video could not be opened or decoded. ``str(err)`` names the file and the cause."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


@dataclass
class Frames:
    """Frames sampled from one video.

    ``indices[i]`` is the 0-based position in the stream of ``images[i]``; ``frame_count`` is the
    number of frames the stream really holds (which may differ from what the container declares);
    ``scale`` is the size of the images relative to the stream's (below 1 when a very large video
    was shrunk on reading); ``runs``: the runs of consecutive frames read by the same decode (see
    :func:`read_frames`), each a :class:`Frames` of its own (images shared, not copied).
    """

    path: str
    indices: np.ndarray
    images: list[np.ndarray]
    frame_count: int
    fps: float
    scale: float = 1.0
    runs: list["Frames"] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def find_videos(root: str | os.PathLike) -> list[Path]:
    """All files under ``root`` (recursively) whose ending is in :data:`VIDEO_EXTENSIONS`, sorted."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def sample_indices(frame_count: int, n: int, floor: bool = False) -> np.ndarray:
    """``n`` evenly spaced, distinct frame indices in ``[0, frame_count)``, first and last included:
    ``linspace(0, frame_count - 1, n)`` rounded (or, with ``floor``, truncated as the DFDC winner's
    ``dtype=int`` did).

    Returns every index when the video has ``n`` frames or fewer.
    """
    if frame_count <= 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    if n >= frame_count:
        return np.arange(frame_count, dtype=np.int64)
    spaced = np.linspace(0, frame_count - 1, n)
    return np.unique((spaced if floor else spaced.round()).astype(np.int64))


def run_starts(frame_count: int, runs: int, length: int) -> np.ndarray:
    """First frames of ``runs`` runs of ``length`` consecutive frames spread over ``[0, frame_count)``:
    each centred in one of ``runs`` equal parts of the video, so they never overlap. Fewer where the
    video holds fewer whole runs; none where it is shorter than one."""
    count = min(runs, frame_count // length) if length > 0 else 0
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    centres = (2 * np.arange(count) + 1) * frame_count // (2 * count)
    return np.clip(centres - length // 2, 0, frame_count - length).astype(np.int64)


def _open(path: str) -> cv2.VideoCapture:
    if not os.path.isfile(path):
        raise VideoReadError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise VideoReadError(path, "not a readable video (container could not be opened)")
    return capture


def _count_frames(path: str) -> int:
    capture = _open(path)
    try:
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def shrink(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` (H x W x C, any channel order) with its long side brought down to ``max_side``."""
    side = max(image.shape[:2])
    if max_side is None or side <= max_side:
        return image
    scale = max_side / side
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _stream(path: str, wanted: np.ndarray, max_side: int | None) -> tuple[list[int], list[np.ndarray], int, bool]:
    """Decode ``path`` once with PyAV, keeping the ``wanted`` frames (shrunk to ``max_side``).

    Every frame up to the last wanted one passes the decoder, but the frames that are neither wanted
    nor referenced by another frame are skipped unseen (FFmpeg's ``skip_frame`` set per packet:
    H.264's and HEVC's non-reference B-frames, half of a DFDC clip's frames), so decoding costs
    about half of OpenCV's ``grab()`` of every frame; the kept frames are the same pixels
    (``tests/test_video.py``). A frame's index is its packet's rank by presentation time stamp;
    where the stamps cannot rank the packets (one missing or repeated), nothing is skipped and
    frames are counted as the decoder gives them, as OpenCV does. A packet the decoder rejects is
    left out, as a frame OpenCV cannot decode is.

    Returns the kept indices and RGB images, the number of frames the stream holds up to the last
    wanted one, and whether it went on past it (a container that under-declares its length).
    """
    wanted_set, last = {int(i) for i in wanted}, int(wanted[-1])
    order = _display_order(path)
    kept: dict[int, np.ndarray] = {}
    try:
        container = av.open(path)
    except av.FFmpegError as err:
        raise VideoReadError(path, f"not a readable video ({err})") from None
    with container:
        if not container.streams.video:
            raise VideoReadError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "AUTO", _decoder_threads
        codec = stream.codec_context
        position = 0  # frames given by the decoder, the index where the stamps do not rank

        def keep(frames) -> None:
            nonlocal position
            for frame in frames:
                index = position if order is None else order.get(frame.pts, -1)
                position += 1
                if index in wanted_set and index not in kept:
                    kept[index] = _upright(frame, max_side)

        for packet in _packets(container, stream, path):
            if len(kept) == len(wanted_set) or (order is None and position > last):
                break
            if order is not None:
                codec.skip_frame = "DEFAULT" if order.get(packet.pts) in wanted_set else "NONREF"
            try:
                keep(codec.decode(packet))
            except av.FFmpegError:
                log.debug("%s: a packet could not be decoded, skipped", path)
        codec.skip_frame = "DEFAULT"
        with contextlib.suppress(av.FFmpegError):
            keep(codec.decode(None))
    total = len(order) if order is not None else position
    indices = sorted(i for i in kept if i <= last)
    log.debug(DECODED, path, min(total, last + 1), position, len(indices))
    return indices, [kept[i] for i in indices], min(total, last + 1), total > last + 1


#: :func:`_stream`'s debug line: frames the stream holds up to the last wanted one, frames decoded, frames kept.
DECODED = "%s: %d frames streamed, %d decoded, %d kept"


_decoder_threads = 0


def set_decoder_threads(count: int) -> None:
    """Decode with ``count`` threads in this process (0, the default: FFmpeg's choice, about one per
    CPU). A worker process that shares the CPUs with others sets its share, as it does torch's:
    more decoder threads than cores cost CPU time for nothing (the kernel benchmark's 8 clips: 7.6 s
    of CPU with FFmpeg's choice on 2 CPUs, 7.0 s with one thread)."""
    global _decoder_threads
    _decoder_threads = count


def _packets(container, stream, path: str):
    """The video packets of ``container`` that hold a frame, in decode order; a stream that breaks
    off ends there."""
    try:
        for packet in container.demux(stream):
            if packet.size and not packet.is_discard:
                yield packet
    except av.FFmpegError as err:
        log.debug("%s: the stream breaks off (%s)", path, err)


def _display_order(path: str) -> dict[int, int] | None:
    """Each video packet's presentation time stamp -> its frame's index in display order, from a pass
    that reads the packets without decoding them; ``None`` where a stamp is missing or repeated."""
    try:
        with av.open(path) as container:
            stamps = [packet.pts for packet in _packets(container, container.streams.video[0], path)]
    except (av.FFmpegError, IndexError):
        return None
    if None in stamps or len(set(stamps)) != len(stamps):
        return None
    return {stamp: index for index, stamp in enumerate(sorted(stamps))}


def _upright(frame, max_side: int | None) -> np.ndarray:
    """A decoded PyAV frame as an RGB array, turned as its display matrix says (as OpenCV does) and
    shrunk to ``max_side``."""
    rgb = frame.to_ndarray(format="rgb24")
    turn = _TURNS.get(round(-frame.rotation) % 360)
    return shrink(rgb if turn is None else cv2.rotate(rgb, turn), max_side)


#: Display rotations (degrees clockwise) and the turn that shows a frame upright.
_TURNS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def _seek(path: str, wanted: np.ndarray, max_side: int | None) -> tuple[list[int], list[np.ndarray], bool]:
    """Decode the ``wanted`` frames of ``path`` by seeking to each (OpenCV's FFmpeg backend jumps to
    the keyframe before it and decodes forward), or by grabbing forward where it is at most
    :data:`SEEK_GAP` frames ahead. Returns the kept indices and RGB images, and whether the stream
    ends right after the last wanted frame (else its declared length is wrong)."""
    capture = _open(path)
    indices, images = [], []
    try:
        position = 0
        for index in (int(i) for i in wanted):
            if index - position > SEEK_GAP:
                capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                position = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
            while position < index and capture.grab():
                position += 1
            ok, bgr = capture.read() if position == index else (False, None)
            if not ok or bgr is None:
                return indices, images, False
            indices.append(index)
            images.append(cv2.cvtColor(shrink(bgr, max_side), cv2.COLOR_BGR2RGB))
            position += 1
        return indices, images, not capture.grab()
    finally:
        capture.release()


#: Seek when sampled frames lie more than this many frames apart; stream otherwise. Streaming decodes
#: every frame up to the last sampled one, seeking decodes from the keyframe before each sample: on
#: DFDC's 1080p H.264 (a keyframe every ~160 frames) both cost the same 75 frames apart, and seeking
#: is 1.8x faster 150 apart (``tests/benchmarks/bench_video.py``).
SEEK_GAP = 80


#: Evenly spaced frames read per video by default, by every command (DFDC's winner read 32).
FRAMES = 32

#: Consecutive frames per run (``read_frames(runs=...)``): LRNet's block, 30 frames at the video's own rate.
RUN_LENGTH = 30
#: Runs read per video for a sequence model, by default (``kernels.predict --runs``).
RUNS = 3

#: Frames whose long side exceeds this are shrunk on reading: 32 frames of an 8K video would take
#: 3 GB; at this size they take at most 800 MB, and 4K video passes untouched.
MAX_SIDE = 3840


def read_frames(path: str | os.PathLike, n: int = FRAMES, max_side: int | None = MAX_SIDE,
                seek: bool | None = None, floor: bool = False, runs: int = 0, run_length: int = RUN_LENGTH) -> Frames:
    """Read ``n`` evenly spaced frames of ``path`` (fewer if the video is shorter), in stream order,
    and with ``runs``, that many runs of ``run_length`` consecutive frames (:func:`run_starts`) in
    the same decode, as ``Frames.runs``.

    Streamed (``seek=False``): every frame up to the last wanted one passes the decoder, which skips
    those that are neither wanted nor referenced by another frame (:func:`_stream`), so the cost
    follows the video's length. Seeking (``seek=True``):
    each wanted frame is decoded from the keyframe before it, so the cost follows ``n``; ``None``
    seeks where the wanted frames lie more than :data:`SEEK_GAP` frames apart. Both give the same
    indices and pixels; a seek that fails falls back to streaming. When the container's frame count is missing
    or wrong, the true count is found and the frames are sampled over it, so indices are always
    distinct and match the stream (one frame wanted is frame 0, and the declared length stands).
    Frames with a long side over ``max_side`` are shrunk to it
    (``Frames.scale``); ``floor``: see :func:`sample_indices`. Raises :class:`VideoReadError` for a
    file that yields no frame. A run a damaged stream cuts short is left out.
    """
    path = str(path)
    capture = _open(path)
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    capture_size = (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    capture.release()

    frame_count = declared if declared > 0 else _count_frames(path)
    if frame_count == 0:
        raise VideoReadError(path, "no decodable frame (empty or corrupted stream)")

    def plan(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The spread frames, the runs' starts and every frame wanted, for a video of ``count`` frames."""
        spread, starts = sample_indices(count, n, floor), run_starts(count, runs, run_length)
        return spread, starts, np.union1d(spread, (starts[:, None] + np.arange(run_length)).ravel()).astype(np.int64)

    spread, starts, wanted = plan(frame_count)
    last = int(wanted[-1])
    # where the stream must end if the declared length is true; one wanted frame (frame 0) says nothing of it
    reaches_end = last == frame_count - 1
    stretches = 1 + int(np.count_nonzero(np.diff(wanted) > 1))  # a run is one seek
    if declared > 0 and (seek if seek is not None else frame_count > SEEK_GAP * stretches):
        indices, images, ends = _seek(path, wanted, max_side)
        if (ends or not reaches_end) and len(indices) == len(wanted):
            return _frames(path, indices, images, frame_count, fps, capture_size, spread, starts, run_length)
        log.info("%s: seeking failed or the declared length is wrong; streaming", path)
    indices, images, grabbed, overran = _stream(path, wanted, max_side)
    short = grabbed <= last  # the stream ended before the last wanted frame
    if short or (overran and reaches_end):
        true_count = grabbed if short else _count_frames(path)
        if true_count == 0:
            raise VideoReadError(path, "no decodable frame (truncated or corrupted stream)")
        log.info("%s: container declares %d frames, stream holds %d; resampled", path, declared, true_count)
        frame_count = true_count
        spread, starts, wanted = plan(frame_count)
        indices, images, _, _ = _stream(path, wanted, max_side)
    if not images:
        raise VideoReadError(path, "no decodable frame (frames present but none could be decoded)")
    return _frames(path, indices, images, frame_count, fps, capture_size, spread, starts, run_length)


def _frames(path: str, indices: list[int], images: list[np.ndarray], frame_count: int, fps: float,
            capture_size: tuple[float, float], spread: np.ndarray, starts: np.ndarray, run_length: int) -> Frames:
    """The decoded frames as the ``spread`` ones with the runs from ``starts`` (a run missing a frame is left out)."""
    height, width = images[0].shape[:2]
    scale = min(max(height, width) / max(int(capture_size[0]), int(capture_size[1]), 1), 1.0)
    decoded = dict(zip(indices, images))

    def part(wanted) -> Frames:
        kept = [int(i) for i in wanted if int(i) in decoded]
        return Frames(path, np.asarray(kept, dtype=np.int64), [decoded[i] for i in kept], frame_count, fps, scale)

    runs = [part(range(start, start + run_length)) for start in starts]
    frames = part(spread)
    frames.runs = [run for run in runs if len(run) == run_length]
    return frames
