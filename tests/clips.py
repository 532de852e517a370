"""Small video files made on the fly for tests: numbered frames, vertical, rotated, lying headers."""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np


def numbered_frames(count: int, height: int = 120, width: int = 200) -> list[np.ndarray]:
    """BGR frames whose mean grey level encodes their index (``8 * i + 20``), plus a red top-left
    corner marker to tell orientation."""
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), 8 * i + 20, np.uint8)
        frame[: height // 4, : width // 5] = (0, 0, 255)
        frames.append(frame)
    return frames


def frame_number(rgb: np.ndarray) -> int:
    """Recover the index written by :func:`numbered_frames` from a decoded RGB frame."""
    height, width = rgb.shape[:2]
    centre = rgb[height // 2 - 10 : height // 2 + 10, width // 2 - 10 : width // 2 + 10]
    return round((float(centre.mean()) - 20) / 8)


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0, fourcc: str = "mp4v") -> Path:
    """Encode BGR ``frames`` into ``path`` with OpenCV."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def rotate_clip(src: Path, dst: Path) -> Path:
    """Copy an mp4 with its track's display matrix set to a 90° clockwise rotation, as phones do."""
    data = bytearray(src.read_bytes())
    tkhd = data.find(b"tkhd")
    assert tkhd > 0 and data[tkhd + 4] == 0, "expects a version-0 tkhd box"
    matrix = tkhd + 8 + 20 + 8 + 8  # after version/flags, times/ids/duration, reserved, layer/volume
    struct.pack_into(">9i", data, matrix, 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    dst.write_bytes(bytes(data))
    return dst


def lie_about_length(src: Path, dst: Path, frames: int) -> Path:
    """Copy an AVI whose headers (``avih`` and ``strh``) claim ``frames`` frames."""
    data = bytearray(src.read_bytes())
    struct.pack_into("<I", data, data.find(b"avih") + 8 + 16, frames)
    struct.pack_into("<I", data, data.find(b"strh") + 8 + 32, frames)
    dst.write_bytes(bytes(data))
    return dst


def sideways_copy(frames, path: Path) -> Path:
    """The frames stored turned 90° counter-clockwise with a 90° clockwise display rotation, as a
    phone records a portrait clip: shown as meant, they are upright again."""
    write_clip(path, [cv2.cvtColor(cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE), cv2.COLOR_RGB2BGR)
                      for im in frames.images])
    return rotate_clip(path, path.with_name("rotated_" + path.name))


def floor_spaced_frames(path: Path, n: int) -> tuple[list[int], list[np.ndarray]]:
    """The frames the DFDC solutions' readers took, decoded independently of ours: indices
    ``int(linspace(0, count - 1, n))`` of OpenCV's declared count, every frame grabbed in order;
    returns the indices and the RGB frames."""
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = np.linspace(0, count - 1, n, endpoint=True).astype(int)
    frames = []
    for index in range(wanted[-1] + 1):
        assert capture.grab()
        if index in wanted:
            frames.append(cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB))
    return wanted.tolist(), frames


def first_frames(path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` consecutive frames of ``path``, RGB (fewer if it is shorter)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames
