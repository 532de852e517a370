"""Seconds per video for a published recipe: for ``selim`` (the 1st place) 1 and 7 EfficientNet-B7s,
for ``polimi`` 1 to 5 of its architectures (B4, B4ST, AutoAttB4, AutoAttB4ST, Xception); random
weights in the converted layouts, with their crop spec, on the shared DFDC 1080p clips, fp32 vs
bf16 + channels_last (fp16 on CUDA).

    python -m tests.benchmarks.bench_winners [--format selim|polimi] [--frames 6] [--faces 4] [--device cpu|cuda]

Decode + detection is timed with the preset's settings at 2 and ``--frames`` frames and drawn on a
line to the preset's 32; the models are timed on ``--faces`` real face crops and scaled to one face per frame at
32 frames (the DFDC test set: mostly one person). Prints a table with the estimate for 4,000 videos.
Not part of the test run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from kernels.ensemble import Ensemble, _layout
from kernels.pipeline import Cutting, detect_video
from kernels.presets import PRESETS
from preprocessing.detect import FaceDetector
from tests.conftest import find_data
from training.convert import FORMATS
from models.zoo import build_model

PRESET_FRAMES = 32
VIDEOS = 4000


def ensemble_of(models: list, precision: str, device: torch.device) -> Ensemble:
    models = [_layout(m, precision, device) for m in models]
    n = len(models)
    return Ensemble(models, [f"m{i}" for i in range(n)], np.full(n, 1 / n), [""] * n, device, [precision] * n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_winners", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6, help="frames per clip for the detection timing (> 2)")
    parser.add_argument("--faces", type=int, default=4, help="face crops per model timing")
    parser.add_argument("--format", choices=sorted(FORMATS), default="selim")
    parser.add_argument("--models", type=int, nargs="+", help="ensemble sizes (default: 1 and 7 for selim, 1 and 5 for polimi)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    clips = sorted((find_data() / "dfdc" / "train_sample_videos").glob("*.mp4"))
    preset, layouts = PRESETS[args.format], FORMATS[args.format]
    sizes = args.models or [1, 7 if args.format == "selim" else len(layouts)]
    detector = FaceDetector(**{k: v for k, v in preset.flags.items() if k != "frames"}, device=device, **preset.detector)
    cutting = Cutting((layouts[0].spec,), **preset.settings)
    seconds: dict[int, list[float]] = {2: [], args.frames: []}
    crops = []
    for clip in clips:
        for frames in seconds:
            start = time.perf_counter()
            faces = detect_video(clip.name, clip, frames, detector, cutting)
            seconds[frames].append(time.perf_counter() - start)
        crops += faces.crops
    # decoding streams to the last frame whatever the count: a line through 2 and --frames frames
    two, more = np.mean(seconds[2]), np.mean(seconds[args.frames])
    per_video_detect = float(two + (more - two) * (PRESET_FRAMES - 2) / (args.frames - 2))
    crops = (crops * args.faces)[: args.faces]
    print(f"{len(clips)} DFDC 1080p clips: decode + detect {two:.2f} s at 2 frames, {more:.2f} s at {args.frames} "
          f"-> {per_video_detect:.1f} s at {PRESET_FRAMES} frames")
    print("| models | device | precision | model s/face | s/video (32 faces + detection) | 4,000 videos (h) |")
    print("|---|---|---|---|---|---|")
    torch.manual_seed(0)
    models = []
    for i in range(max(sizes)):
        layout = layouts[i % len(layouts)]
        models.append(build_model(layout.config).eval().to(device))
        models[-1].spec = layout.spec
    precisions = ("fp32", "fp16") if device.type == "cuda" else ("fp32", "bf16")
    for n in sizes:
        for precision in precisions:
            ensemble = ensemble_of(models[:n], precision, device)
            ensemble.predict(crops[:1])  # warm-up
            start = time.perf_counter()
            ensemble.predict(crops)
            per_face = (time.perf_counter() - start) / len(crops)
            per_video = per_video_detect + PRESET_FRAMES * per_face
            print(f"| {n} | {device.type} | {precision}{' + channels_last' if precision == 'bf16' else ''} | "
                  f"{per_face:.2f} | {per_video:.1f} | {per_video * VIDEOS / 3600:.0f} |")


if __name__ == "__main__":
    main()
