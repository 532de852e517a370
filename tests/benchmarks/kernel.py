"""The kernel against a straightforward reference as whole commands, start-up included, and the floor.

    python -m tests.benchmarks.kernel [--weights W.pt ... | --untrained CONFIG] [--frames 32] [--repeat 3]
                                      [--overlap] [--baseline CSV]

Clips: the issue's eight (4 FF++ c40 fakes, 2 DFD 1080p originals, 2 DFDC 1080p), linked under
unique names. Reference (``--reference DIR --out CSV``, run here as its own command), decoding as the
DFDC winner's kernel did: ``grab()`` every frame, ``retrieve()`` only the sampled ones; MTCNN on the
whole of each sampled frame at half size, one frame per call; the models in fp32; one video at a time.
Kernel: ``python -m kernels.predict`` with its defaults. The two commands run ``--repeat`` times,
in turn, and the whole seconds are their medians (one run's time varies by about 10% on 2 cores).
Floor: decoding the sampled frames plus the models' forward pass on the crops, nothing else.
``--untrained training/configs/efficientnet_b7.json``: time a training config's model with random
weights instead of a checkpoint (its scores mean nothing; its cost is the trained model's). Also
prints the start-up parts (imports, worker spawn, model load, precision probe cold and cached) and,
with ``--overlap``, the kernel with 0, 1 and 2 detection workers on 1 and on 2 cores. Not part of
the test run.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from kernels.aggregate import aggregate
from kernels.ensemble import CACHE_ENV, Ensemble, choose_precision
from kernels.inputs import default_weights
from kernels.pipeline import Cutting, Workers, iterate_faces
from models.checkpoint import load_model, save_checkpoint
from models.zoo import build_model
from preprocessing.cropspec import CropSpec
from preprocessing.detect import FaceDetector
from preprocessing.faces import find_faces
from preprocessing.video import Frames, read_frames, sample_indices
from tests.conftest import find_data
from training.config import load_config


def issue_clips(data: Path, folder: Path) -> Path:
    """Link the issue's eight clips into ``folder`` under unique names; returns ``folder``."""
    fakes = sorted((data / "ffpp/manipulated_sequences").glob("*/c40/videos/*.mp4"))[::7][:4]
    dfd = sorted((data / "ffpp/original_sequences/actors/c40/videos").glob("*.mp4"))[:2]
    dfdc = sorted((data / "dfdc/train_sample_videos").glob("*.mp4"))[:2]
    folder.mkdir(parents=True, exist_ok=True)
    for clip in fakes + dfd + dfdc:
        name = f"{clip.parts[-4]}_{clip.name}" if clip in fakes else clip.name
        (folder / name).symlink_to(clip)
    return folder


def grab_frames(clip: Path, frames: int) -> Frames:
    """``frames`` evenly spaced frames of ``clip`` as the DFDC winner's kernel read them: OpenCV
    ``grab()`` on every frame, ``retrieve()`` on the wanted ones."""
    capture = cv2.VideoCapture(str(clip))
    wanted = set(sample_indices(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), frames).tolist())
    kept, index = {}, 0
    while capture.grab():
        if index in wanted:
            ok, bgr = capture.retrieve()
            if ok:
                kept[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        index += 1
    return Frames(str(clip), np.array(sorted(kept)), [kept[i] for i in sorted(kept)], index, 0.0)


def reference(folder: Path, weights: list[Path], frames: int, out: Path) -> None:
    """Score ``folder`` the straightforward way into ``out`` (``filename, label, seconds``)."""
    detector = FaceDetector(batch_size=1, scale=0.5)
    ensemble = Ensemble.load(weights, precision="fp32")
    rows = []
    for clip in sorted(folder.iterdir()):
        start = time.perf_counter()
        sampled = grab_frames(clip, frames)
        faces = find_faces(sampled, detector, detect_every=1)
        label = 0.5
        if faces:
            probs, tracks = ensemble.predict([f.crop for f in faces]), [f.track for f in faces]
            scores = {n: m.calibration(aggregate(probs[n], tracks, "confident")) for n, m in zip(ensemble.names, ensemble.models)}
            label = float(np.clip(ensemble.combine(scores), 0.01, 0.99))
        rows.append({"filename": clip.name, "label": label, "seconds": time.perf_counter() - start})
    pd.DataFrame(rows).to_csv(out, index=False)


def command(args: list[str], cores: str | None = None) -> float:
    """Wall seconds of ``python -m ARGS`` (on the CPUs ``cores`` names, for ``taskset -c``)."""
    prefix = ["taskset", "-c", cores] if cores else []
    start = time.perf_counter()
    done = subprocess.run([*prefix, sys.executable, "-m", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"python -m {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def floor(folder: Path, weights: list[Path], frames: int) -> float:
    """Seconds per video to decode the sampled frames and run the models on their crops, nothing else."""
    ensemble, detector, total = Ensemble.load(weights), FaceDetector(), 0.0
    clips = sorted(folder.iterdir())
    for clip in clips:
        start = time.perf_counter()
        sampled = read_frames(clip, frames)
        total += time.perf_counter() - start
        crops = [f.crop for f in find_faces(sampled, detector)]
        start = time.perf_counter()
        ensemble.predict(crops)
        total += time.perf_counter() - start
    return total / len(clips)


def startup(weights: list[Path], clip: Path) -> dict[str, float]:
    """Seconds of each start-up part, measured apart."""
    parts = {"imports": command(["kernels.predict", "--help"])}
    start = time.perf_counter()
    cutting = Cutting((CropSpec((224, 224)),))
    first = next(iterate_faces([(clip.name, clip)], lambda left: 1, lambda: 1e9, {}, cutting, Workers({}, 1)))
    parts["worker spawn + MTCNN"] = time.perf_counter() - start - first.seconds
    start = time.perf_counter()
    models = [load_model(w, torch.device("cpu")) for w in weights]
    parts["model load"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as cache:
        os.environ[CACHE_ENV] = cache
        for name in ("probe (cold)", "probe (cached)"):
            start = time.perf_counter()
            for model, path in zip(models, weights):
                choose_precision(model, "auto", torch.device("cpu"), str(path))
            parts[name] = time.perf_counter() - start
        del os.environ[CACHE_ENV]
    return parts


def kernel(folder: Path, weights: list[Path], frames: int, out: Path, *extra: str, cores: str | None = None) -> tuple[float, pd.DataFrame]:
    seconds = command(["kernels.predict", "--videos", str(folder), "--out", str(out), "--fresh",
                       "--frames", str(frames), "--weights", *map(str, weights), *extra], cores)
    return seconds, pd.read_csv(out.with_name(out.stem + "_details.csv")).set_index("filename")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=find_data())
    parser.add_argument("--weights", type=Path, nargs="+", default=default_weights())
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--untrained", type=Path, help="a training config: its model with random weights, for timing")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command, in turn; their medians are compared")
    parser.add_argument("--overlap", action="store_true", help="also time --workers 0, 1 and 2 on 1 and 2 cores")
    parser.add_argument("--baseline", type=Path, help="an earlier kernel's submission CSV on these clips, to compare")
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.reference:
        return reference(args.reference, args.weights, args.frames, args.out)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = issue_clips(args.data, tmp / "clips")
        if args.untrained:
            args.weights = [tmp / f"{args.untrained.stem}.pt"]
            save_checkpoint(args.weights[0], build_model(load_config(args.untrained).model))
        n = len(list(folder.iterdir()))
        weights = [str(w) for w in args.weights]
        ref_runs, our_runs = [], []
        for _ in range(args.repeat):
            ref_runs.append(command(["tests.benchmarks.kernel", "--reference", str(folder), "--out", str(tmp / "ref.csv"),
                                     "--frames", str(args.frames), "--weights", *weights]))
            seconds, ours = kernel(folder, args.weights, args.frames, tmp / "k" / "submission.csv")
            our_runs.append(seconds)
        ref = pd.read_csv(tmp / "ref.csv").set_index("filename")
        ref_total, ours_total = float(np.median(ref_runs)), float(np.median(our_runs))
        floor_per_video = floor(folder, args.weights, args.frames)
        parts = startup(args.weights, next(iter(sorted(folder.iterdir()))))
        print(f"{n} clips, {args.frames} frames, weights {[Path(w).name for w in weights]}, kernel precision auto; "
              f"whole s: median of {args.repeat} runs each (range); s/video: the last run")
        print(f"{'':<28} {'whole s':>8} {'range':>11} {'s/video once started':>21}")
        ref_video, our_video = ref["seconds"].iloc[1:].mean(), ours["seconds"].iloc[1:].mean()
        for name, total, runs, video in (("reference", ref_total, ref_runs, ref_video), ("kernel", ours_total, our_runs, our_video)):
            print(f"{name:<28} {total:>8.1f} {f'{min(runs):.1f}-{max(runs):.1f}':>11} {video:>21.2f}")
        print(f"{'floor (decode + models)':<28} {floor_per_video * n:>8.1f} {'':>11} {floor_per_video:>21.2f}")
        print(f"ratios: whole command {ref_total / ours_total:.2f}x faster (target >= 2x), per video once started "
              f"{ref_video / our_video:.2f}x (target >= 3x), kernel / floor per video {our_video / floor_per_video:.2f}x, "
              f"whole kernel / floor {ours_total / (floor_per_video * n):.2f}x (start-up included; B7 target <= 1.25x)")
        print(f"max |kernel - reference| label {np.abs(ours['label'] - ref['label'].reindex(ours.index)).max():.4f}")
        if args.baseline:
            base = pd.read_csv(args.baseline).set_index("filename")["label"]
            print(f"max |kernel - baseline| label {np.abs(ours['label'] - base.reindex(ours.index)).max():.4f}")
        print("start-up parts (s): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
        if args.overlap:
            print(f"{'cores':<6} {'workers':>7} {'whole s':>8}")
            for cores in ("0", "0,1"):
                for workers in ("0", "1", "2"):
                    seconds, _ = kernel(folder, args.weights, args.frames, tmp / f"o{cores}{workers}" / "s.csv",
                                        "--workers", workers, cores=cores)
                    print(f"{cores:<6} {workers:>7} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
