"""What a sequence model (LRNet) adds to the kernel: whole commands and the parts of its input.

    python -m tests.benchmarks.bench_sequence [--frames 32] [--runs 3]

Clips: the kernel benchmark's eight (4 FF++ c40 fakes, 2 DFD 1080p originals, 2 DFDC 1080p).
Commands: ``kernels.predict`` with ``lite0.pt`` alone, ``lrnet_ffpp.pt`` alone, and both, start-up
included, one detection worker (the default). Parts, per video, in this process: decoding the
spread frames alone and with the runs, then per run MTCNN's following of its faces, and the landmark
sequences (dlib's 68 points, the LK + Kalman calibration, the normalisation). Not part of the test
run; the machine may be shared, so compare rows of one run only.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from preprocessing.detect import FaceDetector
from preprocessing.faces import find_faces
from preprocessing.landmarks import LandmarkSpec
from preprocessing.sequences import run_sequences
from preprocessing.video import RUNS, read_frames
from tests.benchmarks.kernel import issue_clips, kernel
from tests.conftest import REPO, find_data

WEIGHTS = {"lite0 alone": ["lite0.pt"], "LRNet alone": ["lrnet_ffpp.pt"], "both": ["lite0.pt", "lrnet_ffpp.pt"]}


def parts(clip: Path, frames: int, runs: int, detector: FaceDetector, landmarks: dict) -> dict[str, float]:
    """Seconds of each part of one video's sequence input (landmarks + calibration: the sequences'
    time less the following's, measured apart)."""
    out, start = {}, time.perf_counter()
    read_frames(clip, frames)
    out["decode, spread frames"] = time.perf_counter() - start
    start = time.perf_counter()
    sampled = read_frames(clip, frames, runs=runs)
    out["decode, with the runs"] = time.perf_counter() - start
    start = time.perf_counter()
    for run in sampled.runs:
        find_faces(run, detector, detect_every=len(run) - 1)
    out["follow faces (MTCNN)"] = time.perf_counter() - start
    start = time.perf_counter()
    run_sequences(sampled, detector, landmarks)
    out["landmarks + calibration"] = time.perf_counter() - start - out["follow faces (MTCNN)"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=find_data())
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = issue_clips(args.data.resolve(), Path(tmp) / "clips")
        clips = sorted(folder.iterdir())
        print(f"{len(clips)} clips, {args.frames} frames, {args.runs} runs of 30")
        print(f"{'kernel':<14} {'whole s':>8} {'s/video':>8}")
        for label, names in WEIGHTS.items():
            seconds, _ = kernel(folder, [REPO / "weights" / n for n in names], args.frames,
                                Path(tmp) / label.replace(" ", "_") / "submission.csv", "--runs", str(args.runs))
            print(f"{label:<14} {seconds:>8.1f} {seconds / len(clips):>8.2f}")
        spec, detector = LandmarkSpec(), FaceDetector()
        landmarks = {spec: spec.build_detector()}
        totals: dict[str, float] = {}
        for clip in clips:
            for name, seconds in parts(clip, args.frames, args.runs, detector, landmarks).items():
                totals[name] = totals.get(name, 0.0) + seconds
        print(f"{'part':<26} {'s/video':>8}")
        for name, seconds in totals.items():
            print(f"{name:<26} {seconds / len(clips):>8.2f}")


if __name__ == "__main__":
    main()
