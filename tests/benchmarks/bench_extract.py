"""Seconds per video for each stage of face extraction on the shared clips, printed as a table.

    python -m tests.benchmarks.bench_extract [--data DIR] [--frames 32] [--limit N]

Stages: decoding N frames as the DFDC winner did (OpenCV ``grab()`` every frame, ``retrieve()`` the
wanted ones), by our streaming (PyAV, skipping the frames no one reads) and by seeking (for
comparison), MTCNN on every frame in a per-frame loop and batched over the video's frames, and
``find_faces`` as every command runs it (following faces between key frames, tracking, cropping).
Not part of the test run: timings are measured and compared in one run on one machine, never
asserted.
"""
from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from preprocessing.detect import FaceDetector
from preprocessing.faces import find_faces
from preprocessing.video import find_videos, read_frames
from tests.benchmarks.kernel import grab_frames
from tests.conftest import find_data


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=find_data(), help="folder with ffpp/ and dfdc/")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips (0: all)")
    args = parser.parse_args(argv)

    clips = find_videos(args.data / "ffpp") + find_videos(args.data / "dfdc")
    clips = clips[: args.limit] if args.limit else clips
    loop, batched = FaceDetector(batch_size=1), FaceDetector(batch_size=args.frames)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {loop.device}, "
          f"{args.frames} frames per video")
    header = f"{'clip':<44} {'size':>9} {'grab':>7} {'stream':>7} {'seek':>7} {'det loop':>8} {'det batch':>9} {'find_faces':>10}"
    print(header)
    rows = []
    for clip in clips:
        t_grab, _ = timed(grab_frames, clip, args.frames)
        t_stream, frames = timed(partial(read_frames, seek=False), clip, args.frames)
        t_seek, _ = timed(partial(read_frames, seek=True), clip, args.frames)
        t_loop, _ = timed(loop, frames.images)
        t_batch, _ = timed(batched, frames.images)
        t_follow, _ = timed(find_faces, frames, batched)
        row = (t_grab, t_stream, t_seek, t_loop, t_batch, t_follow)
        rows.append(row)
        height, width = frames.images[0].shape[:2]
        print(f"{clip.name[:44]:<44} {f'{width}x{height}':>9} " + " ".join(
            f"{v:>{w}.2f}" for v, w in zip(row, (7, 7, 7, 8, 9, 10))), flush=True)
    mean = np.mean(rows, axis=0)
    print(f"{'mean over ' + str(len(rows)) + ' clips':<54} " + " ".join(
        f"{v:>{w}.2f}" for v, w in zip(mean, (7, 7, 7, 8, 9, 10))))


if __name__ == "__main__":
    main()
