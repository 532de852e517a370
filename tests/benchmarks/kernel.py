"""The kernel against a straightforward reference on the same clips, models and frames.

    python -m tests.benchmarks.kernel [--weights W.pt ...] [--frames 32] [--limit 8]

Reference: every frame decoded with ``read()``, MTCNN per frame at half scale, the models in fp32,
one video at a time. Kernel: :func:`kernels.predict.run` (streamed decode, the size-based scale
rule, detection in a worker process beside the models, bf16 + channels_last where supported).
Prints seconds per video by stage and the largest prediction difference. Not part of the test run.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from kernels.aggregate import aggregate
from kernels.ensemble import Ensemble
from kernels.predict import Settings, default_weights, run
from preprocessing.detect import FaceDetector
from preprocessing.faces import find_faces
from preprocessing.video import Frames, find_videos, sample_indices
from tests.conftest import find_data


def reference(clips: list[Path], ensemble: Ensemble, frames: int) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per stage and the video scores of the straightforward pipeline."""
    import preprocessing.detect as detect

    rule = detect.detection_scale
    detect.detection_scale = lambda height, width: 0.5  # the reference always halves
    detector = FaceDetector(batch_size=1)
    seconds = {"decode": 0.0, "detect": 0.0, "models": 0.0}
    scores = {}
    try:
        for clip in clips:
            start = time.perf_counter()
            capture = cv2.VideoCapture(str(clip))
            wanted = set(sample_indices(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), frames).tolist())
            kept, index = {}, 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                if index in wanted:
                    kept[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
            sampled = Frames(str(clip), np.array(sorted(kept)), [kept[i] for i in sorted(kept)], index, 0.0)
            seconds["decode"] += time.perf_counter() - start
            start = time.perf_counter()
            faces = find_faces(sampled, detector)
            seconds["detect"] += time.perf_counter() - start
            start = time.perf_counter()
            probs = ensemble.predict([f.crop for f in faces])
            tracks = [f.track for f in faces]
            model_scores = {n: aggregate(p, tracks, "confident") for n, p in probs.items()} if faces else {}
            scores[clip.name] = ensemble.combine(model_scores) if faces else 0.5
            seconds["models"] += time.perf_counter() - start
    finally:
        detect.detection_scale = rule
    return seconds, scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=find_data())
    parser.add_argument("--weights", type=Path, nargs="+", default=default_weights())
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--limit", type=int, default=8, help="clips from the shared data (default: 8)")
    parser.add_argument("--workers", type=int, default=1, help="the kernel's detection processes (default: 1)")
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1, 2, 4],
                        help="kernel runs with MTCNN on every k-th frame (default: 1 2 4)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    clips = (find_videos(args.data / "ffpp") + find_videos(args.data / "dfdc"))[:: 2][: args.limit]
    start = time.perf_counter()
    ref_seconds, ref_scores = reference(clips, Ensemble.load(args.weights, precision="fp32"), args.frames)
    ref_total = time.perf_counter() - start

    ensemble = Ensemble.load(args.weights)
    n = len(clips)
    print(f"{n} clips, {args.frames} frames, models {ensemble.names}, kernel precision {ensemble.precisions}")
    print(f"{'pipeline':<34} {'s/video':>8} {'speed-up':>9} {'max |diff|':>10}  stages (s/video)")
    print(f"{'reference (sequential)':<34} {ref_total / n:>8.2f} {1:>8.2f}x {0:>10.4f}  " +
          ", ".join(f"{k} {v / n:.2f}" for k, v in ref_seconds.items()))
    for every in args.detect_every:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            details = run([(c.name, c) for c in clips], ensemble, Path(tmp) / "s.csv",
                          Settings(frames=args.frames, workers=args.workers, eps=0.0, detect_every=every))
            total = time.perf_counter() - start
        ours = dict(zip(details["filename"], details["label"]))
        diff = max(abs(ours[k] - ref_scores[k]) for k in ref_scores)
        name = f"kernel, {args.workers} worker(s), detect 1/{every}"
        print(f"{name:<34} {total / n:>8.2f} {ref_total / total:>8.2f}x {diff:>10.4f}  (stages overlap: wall time only)")


if __name__ == "__main__":
    main()
