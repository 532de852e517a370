"""Cost per frame of LRNet's landmark input on a 1080p DFDC clip: dlib landmarks, 400 px face crops,
calibration (LK optical flow + Kalman filter).

    python -m tests.benchmarks.bench_landmarks [--clip CLIP] [--frames 60] [--repeats 3]

Reads the clip's first ``--frames`` consecutive frames, finds the face with MTCNN on the first one
and keeps that box (the face barely moves in 2 s), then times each stage over the run, ``--repeats``
times, and prints the median milliseconds per frame. Not part of the test run.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from preprocessing.detect import FaceDetector
from preprocessing.landmark_calibration import calibrate
from preprocessing.landmarks import LandmarkDetector, face_crops, steady_shapes
from tests.clips import first_frames
from tests.conftest import find_data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = find_data()
    parser.add_argument("--clip", type=Path, default=data / "dfdc/train_sample_videos/abqwwspghj.mp4" if data else None)
    parser.add_argument("--frames", type=int, default=60, help="consecutive frames timed (default: 60)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per stage; the median is shown (default: 3)")
    args = parser.parse_args(argv)

    frames = first_frames(args.clip, args.frames)
    found = FaceDetector()(frames[:1])[0]
    box = found.boxes[np.argmax(found.scores)]
    landmarker = LandmarkDetector()
    times: dict[str, list[float]] = {"landmarks (dlib 68)": [], "400 px face crops": [], "calibration (LK + Kalman)": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        raw = np.stack([landmarker(frame, box[None])[0] for frame in frames]).astype(np.int64)
        middle = time.perf_counter()
        faces, locations = face_crops(frames, *steady_shapes(raw))
        crops = time.perf_counter()
        calibrate(faces, locations)
        end = time.perf_counter()
        for name, seconds in zip(times, (middle - start, crops - middle, end - crops)):
            times[name].append(seconds)
    height, width = frames[0].shape[:2]
    print(f"{args.clip.name}: {width}x{height}, {len(frames)} frames, one face")
    print(f"{'stage':<28} {'ms/frame':>9}")
    total = 0.0
    for name, runs in times.items():
        per_frame = 1000 * statistics.median(runs) / len(frames)
        total += per_frame
        print(f"{name:<28} {per_frame:>9.2f}")
    print(f"{'total':<28} {total:>9.2f}")


if __name__ == "__main__":
    main()
