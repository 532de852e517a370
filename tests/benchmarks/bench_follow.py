"""Following faces against full-frame detection on every frame: coverage, box IoU, video scores, time.

    python -m tests.benchmarks.bench_follow [--settings 8@2x160+0 8@2x160+2 ...] [--frames 32]
                                            [--weights weights/lite0.pt] [--ffpp-step 8] [--limit N]

Clips: the shared FF++ clips (every ``--ffpp-step``-th), the two DFDC clips of ``data/`` and the 15 of
``data-more/dfdc``. Each clip's frames are decoded once; then, per setting ``K@GROWxSIZE+STEPS``,
``find_faces`` runs with ``--detect-every K``, ``--refine-steps STEPS`` (default: the detector's) and a
region search of ``--region-grow GROW --region-size SIZE``; first
with K=1, full-frame detection on every frame (the commands' behaviour before following), the
reference. Per setting: detection CPU seconds per video (one torch thread, so a loaded machine
disturbs it less than wall time), full-frame searches per video,
face coverage (share of frames with a face, mean over clips) in points against the reference, the
worst and 1st-percentile IoU of a followed box against the reference box of its frame, and the largest
change of a video's score (``--weights``, fp32, each model's own frame -> video rule). Not part of the
test run: compare within one run.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from kernels.ensemble import Ensemble
from kernels.pipeline import cut_faces
from kernels.scoring import Settings, label_of
from preprocessing.detect import DEFAULTS, FaceDetector
from preprocessing.faces import find_faces
from preprocessing.geometry import box_iou
from preprocessing.video import find_videos, read_frames
from tests.conftest import REPO, find_data


def clips(data: Path, ffpp_step: int) -> list[Path]:
    more = data.parent / "data-more" / "dfdc" / "videos"
    return (find_videos(data / "ffpp")[::ffpp_step] + find_videos(data / "dfdc")
            + (find_videos(more) if more.is_dir() else []))


def run(frames, detector: FaceDetector, every: int, ensemble: Ensemble) -> dict:
    """One setting on one clip: faces, CPU seconds, full-frame searches, the video score."""
    searches = []
    hook = detector.mtcnn.pnet.register_forward_hook(lambda m, i, o: searches.append(i[0].shape))
    start = time.process_time()
    try:
        faces = find_faces(frames, detector, detect_every=every)
    finally:
        hook.remove()
    seconds = time.process_time() - start
    cuts = cut_faces(frames, faces, ensemble.crop_specs)[0]
    record = {"status": "ok" if faces else "none", "track_ids": [f.track for f in faces],
              "probs": {k: v.tolist() for k, v in ensemble.predict(cuts).items()} if faces else {}}
    # full-frame searches: the images of the P-Net calls on the largest pyramid level (one call per batch)
    largest = max(s[2] * s[3] for s in searches)
    return {"faces": faces, "seconds": seconds, "full": sum(s[0] for s in searches if s[2] * s[3] == largest),
            "label": label_of(record, ensemble, Settings())[0]}


def compare(faces, reference, count: int) -> tuple[float, list[float]]:
    """Coverage (share of the ``count`` frames with a face) and each face's IoU with the best
    reference box of its frame (0 where the reference has none)."""
    ref_boxes = {}
    for f in reference:
        ref_boxes.setdefault(f.frame, []).append(f.box)
    ious = [float(box_iou(f.box[None], np.array(ref_boxes[f.frame])).max()) if f.frame in ref_boxes else 0.0
            for f in faces]
    return len({f.frame for f in faces}) / count, ious


def parse_setting(text: str) -> tuple[int, tuple[float, float, int]]:
    """``K@GROWxSIZE[+STEPS]`` as ``(K, (GROW, SIZE, STEPS))``."""
    every, region = text.split("@")
    region, _, steps = region.partition("+")
    grow, size = (float(v) for v in region.split("x"))
    return int(every), (grow, size, int(steps) if steps else DEFAULTS["refine_steps"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=find_data(), help="the shared data/ folder (data-more/ beside it)")
    parser.add_argument("--settings", nargs="+", default=["8@2x160+0", "8@2x160+1", "8@2x160+2", "8@2x160+3", "16@2x160+2"],
                        help="K@GROWxSIZE[+STEPS]: --detect-every K, --region-grow GROW, --region-size SIZE, "
                             "--refine-steps STEPS")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--ffpp-step", type=int, default=8, help="every n-th FF++ clip")
    parser.add_argument("--weights", type=Path, nargs="+", default=[REPO / "weights" / "lite0.pt"])
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips (0: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    videos = clips(args.data, args.ffpp_step)[: args.limit or None]
    ensemble = Ensemble.load(args.weights, precision="fp32")
    settings = [parse_setting(s) for s in args.settings]
    settings = [(1, settings[0][1])] + settings
    detectors = {r: FaceDetector(region_grow=r[0], region_size=int(r[1]), refine_steps=r[2]) for _, r in settings}
    results = {s: [] for s in settings}
    for clip in videos:
        frames = read_frames(clip, args.frames)
        reference = None
        for every, region in settings:
            out = run(frames, detectors[region], every, ensemble)
            reference = reference or out
            coverage, ious = compare(out["faces"], reference["faces"], len(frames))
            results[(every, region)].append({**out, "coverage": coverage, "ious": ious,
                                             "dlabel": abs(out["label"] - reference["label"])})
        ref = results[settings[0]][-1]
        logging.warning("%s: reference %.1f s, coverage %.2f", clip.name, ref["seconds"], ref["coverage"])

    print(f"{len(videos)} clips ({args.frames} frames; FF++ every {args.ffpp_step}th, DFDC data + data-more), "
          f"weights {[w.name for w in args.weights]} fp32, 1 torch thread, device {detectors[settings[0][1]].device}; "
          f"CPU seconds of detection + tracking (decode excluded)")
    print(f"{'every':>5} {'region':>10} {'s/video':>8} {'x faster':>8} {'full/video':>10} {'coverage':>8} "
          f"{'d cov pt':>8} {'min IoU':>7} {'p1 IoU':>7} {'max d score':>11}")
    base = np.mean([r["seconds"] for r in results[settings[0]]])
    base_cov = np.mean([r["coverage"] for r in results[settings[0]]])
    for (every, region), rows in results.items():
        seconds = np.mean([r["seconds"] for r in rows])
        coverage = np.mean([r["coverage"] for r in rows])
        ious = np.concatenate([r["ious"] for r in rows]) if any(r["ious"] for r in rows) else np.ones(1)
        name = "-" if every == 1 else f"{region[0]:g}x{region[1]:g}+{region[2]}"
        full = np.mean([r["full"] for r in rows])
        print(f"{every:>5} {name:>10} {seconds:>8.2f} {base / seconds:>8.2f} {full:>10.1f} {coverage:>8.3f} "
              f"{100 * (coverage - base_cov):>8.1f} {ious.min():>7.3f} {np.percentile(ious, 1):>7.3f} "
              f"{max(r['dlabel'] for r in rows):>11.4f}")


if __name__ == "__main__":
    main()
