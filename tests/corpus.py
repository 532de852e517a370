"""A corpus of hostile inputs, made from a shared clip on the fly: nothing copied, nothing downloaded.

:func:`build_corpus` writes every case into a folder and returns what the kernel must do with it:
``("ok", "")`` for a file it must score, ``("prior", cause)`` for one that gets the prior, with a
fragment of the cause it must name. Files that are not videos by name are absent from the table.
"""
from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import cv2
import numpy as np

from preprocessing.video import read_frames
from tests.clips import lie_about_length, sideways_copy, write_clip

SOURCE = "ffpp/original_sequences/youtube/c40/videos/183.mp4"
UNREADABLE = "not a readable video"


def _wav_bytes() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(16000) / 5) * 8000).astype(np.int16).tobytes())
    return buffer.getvalue()


def build_corpus(data_dir: Path, folder: Path) -> dict[str, tuple[str, str]]:
    """Write the corpus into ``folder``; returns ``{file name relative to folder: (status, cause)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    source = read_frames(data_dir / SOURCE, 12)
    frames = [cv2.cvtColor(cv2.resize(im, (640, 360), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
              for im in source.images]
    clip = write_clip(folder / "clip.mp4", frames)
    data = clip.read_bytes()
    real = (data_dir / SOURCE).read_bytes()
    expected = {"clip.mp4": ("ok", "")}

    def put(name: str, content: bytes, status: str = "prior", cause: str = UNREADABLE) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
        expected[name] = (status, cause)

    put("zero-byte.mp4", b"", cause="empty file")
    put("random-bytes.mp4", np.random.default_rng(0).bytes(64_000))
    for share in (10, 50, 90):
        put(f"truncated-{share}.mp4", real[: len(real) * share // 100])
    damaged = bytearray(real)
    damaged[:64] = np.random.default_rng(1).bytes(64)  # the ftyp box and the start of mdat
    put("damaged-header.mp4", bytes(damaged))
    put("audio-only.mp4", _wav_bytes())
    write_clip(folder / "one-frame.mp4", frames[:1])
    expected["one-frame.mp4"] = ("ok", "")
    honest = write_clip(folder / "honest.avi", frames, fourcc="MJPG")
    lie_about_length(honest, folder / "lying-count.avi", 40)
    honest.unlink()
    expected["lying-count.avi"] = ("ok", "")
    big = cv2.resize(frames[0], (7680, 4320), interpolation=cv2.INTER_LINEAR)
    write_clip(folder / "8k.avi", [big] * 3, fourcc="MJPG")
    expected["8k.avi"] = ("ok", "")
    gray = folder / "grayscale.avi"
    writer = cv2.VideoWriter(str(gray), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 360), isColor=False)
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    writer.release()
    expected["grayscale.avi"] = ("ok", "")
    portrait = sideways_copy(source, folder / "portrait.mp4")  # rotation metadata; the stored copy is sideways
    (folder / "portrait.mp4").unlink()
    expected[portrait.name] = ("ok", "")
    write_clip(folder / "vertical.mp4", [np.ascontiguousarray(cv2.resize(f, (1280, 720))[:, 320:960]) for f in frames])
    expected["vertical.mp4"] = ("ok", "")
    write_clip(folder / "no-face.mp4", [cv2.GaussianBlur(f, (0, 0), 25) for f in frames])
    expected["no-face.mp4"] = ("prior", "no face found")
    for name in ("with spaces.mp4", "ünïcødé.mp4", "-leading-dash.mp4", "sub/nested.mp4", "twin-a.mp4", "twin-b.mp4"):
        put(name, data, "ok", "")
    os.symlink(folder / "clip.mp4", folder / "link.mp4")
    expected["link.mp4"] = ("ok", "")
    (folder / "notes.txt").write_text("not a video")
    return expected
