"""Streamed against seeking frame reads by video length, and a 10-minute 1080p video against a 10-second one.

    python -m tests.benchmarks.bench_video [--clip DFDC_CLIP] [--frames 32] [--lengths 1 2 4 8 16]

Long videos are the shared 10-second DFDC clip (1080p H.264) repeated end to end by stream copy,
with the ffmpeg binary of ``imageio-ffmpeg`` (requirements-dev.txt), into a temporary folder. Prints
seconds for ``--frames`` frames per path and length, the gap between samples where seeking starts to
pay (``preprocessing.video.SEEK_GAP``), and the 10-minute / 10-second ratio of the chosen path.
Not part of the test run.
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import imageio_ffmpeg

from preprocessing.video import SEEK_GAP, read_frames
from tests.conftest import find_data


def repeated(clip: Path, times: int, out: Path) -> Path:
    """``clip`` ``times`` times end to end, without re-encoding (video only)."""
    listing = out.with_suffix(".txt")
    listing.write_text(f"file '{clip}'\n" * times)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe", "0",
                    "-i", str(listing), "-c", "copy", "-an", str(out)], check=True)
    return out


def seconds(path: Path, frames: int, seek: bool | None) -> float:
    start = time.perf_counter()
    read_frames(path, frames, seek=seek)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = find_data()
    parser.add_argument("--clip", type=Path, default=data / "dfdc/train_sample_videos/abofeumbvv.mp4" if data else None)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--lengths", type=int, nargs="*", default=[1, 2, 4, 8, 16],
                        help="video lengths in copies of the clip (default: 1 2 4 8 16)")
    parser.add_argument("--long", type=int, default=60, help="copies for the long video (default: 60, 10 minutes)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'copies':>6} {'frames':>7} {'gap':>6} {'stream s':>9} {'seek s':>7}  faster")
        for copies in args.lengths:
            path = repeated(args.clip, copies, Path(tmp) / f"x{copies}.mp4")
            stream, seek = seconds(path, args.frames, False), seconds(path, args.frames, True)
            count = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
            print(f"{copies:>6} {count:>7} {count / args.frames:>6.0f} {stream:>9.2f} {seek:>7.2f}  "
                  f"{'seek' if seek < stream else 'stream'}")
        short = seconds(args.clip, args.frames, None)
        long = seconds(repeated(args.clip, args.long, Path(tmp) / "long.mp4"), args.frames, None)
    print(f"SEEK_GAP = {SEEK_GAP}: seeking is chosen above {SEEK_GAP} frames between samples")
    print(f"{args.frames} frames, chosen path: {args.long} copies {long:.2f} s, one copy {short:.2f} s, "
          f"ratio {long / short:.2f}x (target < 5x)")


if __name__ == "__main__":
    main()
