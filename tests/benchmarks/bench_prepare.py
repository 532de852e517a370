"""Seconds per video of ``preprocessing.prepare`` on the shared clips, and SSIM vs pixel masks.

    python -m tests.benchmarks.bench_prepare [--data DIR] [--frames 32] [--workers 0 2] [--masks]

Prepares the shared FF++ tree (43 clips: 15 originals, 28 fakes) and the two 1080p DFDC sample fakes
into a temporary folder once per ``--workers`` value and prints, per kind of video, the seconds a
worker spent on it (decode + detect, or decode + crop + mask) and the run's wall time, with what that
makes per 1,000 videos. ``--masks`` then compares the two mask measures on every frame-aligned FF++
pair: each measure's threshold is set so that 0.5% of the crops' outer ring (background, which no
method touches) is flagged, and the table gives the share of mask mass inside the face box (min and
mean over videos) and how much of the face box the mask covers. Not part of the test run.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from preprocessing.masks import DEFAULT_THRESHOLDS, MASK_METHODS, dissimilarity, share_inside
from preprocessing.prepare import PrepareConfig, prepare
from tests.conftest import find_data

RING = 0.1  # the outer tenth of each side of a crop: background and hair, never the face box
BACKGROUND_RATE = 0.005


def kind_of(video: str, boxes_from: str) -> str:
    if video.startswith("original_sequences"):
        return "original (decode + detect)"
    if boxes_from == "original":
        return "fake, original's boxes (decode + crop + mask)"
    return "fake, own boxes (decode + detect)"


def time_runs(data: Path, out: Path, frames: int, workers: list[int]) -> Path:
    """Prepare FF++ and the DFDC sample once per worker count; print per-kind and wall seconds."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {frames} frames per video\n")
    print(f"{'dataset':<8} {'workers':>7} {'videos':>6} {'wall s':>8} {'s/video':>8} {'h/1000 videos':>13}")
    kinds = []
    for n in workers:
        for dataset, root in (("ffpp", data / "ffpp"), ("dfdc", data / "dfdc")):
            target = out / f"{dataset}_w{n}"
            start = time.perf_counter()
            summary = prepare(PrepareConfig(dataset, str(root), str(target), frames=frames, workers=n, overwrite=True))
            wall = time.perf_counter() - start
            print(f"{dataset:<8} {n:>7} {summary.videos:>6} {wall:>8.1f} {wall / summary.videos:>8.2f} "
                  f"{wall / summary.videos * 1000 / 3600:>13.2f}", flush=True)
            for folder in (target / "crops").rglob("faces.json"):
                record = json.loads(folder.read_text())
                kinds.append({"dataset": dataset, "workers": n, "kind": kind_of(record["video"], record["boxes_from"]),
                              "size": f"{record['width']}x{record['height']}", "seconds": record["seconds"]})
    table = pd.DataFrame(kinds).groupby(["dataset", "workers", "kind", "size"])["seconds"].agg(["count", "mean"])
    print("\nseconds one worker spent per video, by kind and frame size:")
    print(table.round(2).to_string())
    return out / f"ffpp_w{workers[0]}"


def ring_mask(shape: tuple[int, int]) -> np.ndarray:
    ring = np.ones(shape, bool)
    k = max(1, int(RING * min(shape)))
    ring[k:-k, k:-k] = False
    return ring


def compare_masks(prepared: Path, blurs: list[float]) -> None:
    """Print the SSIM vs pixel table over the aligned pairs of a prepared FF++ folder."""
    crops = pd.read_csv(prepared / "crops.csv", keep_default_na=False)
    pairs = []
    for row in crops[crops["real_crop"] != ""].itertuples():
        record = json.loads((prepared / "crops" / row.video / "faces.json").read_text())
        face = next(f for f in record["faces"] if (f["frame"], f["track"]) == (row.frame, row.track))
        x, y = face["crop_box"][:2]
        real, fake = (cv2.cvtColor(cv2.imread(str(prepared / p)), cv2.COLOR_BGR2RGB) for p in (row.real_crop, row.crop))
        pairs.append((row.video, real, fake, np.subtract(face["box"], [x, y, x, y])))
    print(f"\n{len(pairs)} aligned crop pairs from {len({p[0] for p in pairs})} fakes; threshold set for a "
          f"{BACKGROUND_RATE:.1%} rate on the crops' outer ring (or the shipped default)")
    print(f"{'measure':<7} {'blur':>4} {'threshold':>9} {'method':<15} {'inside min':>10} {'inside mean':>11} "
          f"{'box covered':>11}")
    for method in MASK_METHODS:
        for blur in blurs:
            maps = [dissimilarity(real, fake, method, blur) for _, real, fake, _ in pairs]
            background = np.concatenate([d[ring_mask(d.shape)] for d in maps])
            for threshold in (float(np.quantile(background, 1 - BACKGROUND_RATE)), DEFAULT_THRESHOLDS[method]):
                rows = []
                for (video, _, _, box), d in zip(pairs, maps):
                    mask = (d >= threshold).astype(np.uint8)
                    x1, y1, x2, y2 = np.clip(np.round(box).astype(int), 0, None)
                    inside = np.nan_to_num(share_inside(mask, box)) * mask.sum()
                    rows.append({"video": video, "mass": mask.sum(), "inside": inside,
                                 "covered": mask[y1:y2, x1:x2].mean()})
                per_video = pd.DataFrame(rows).groupby("video").sum(numeric_only=True)
                per_video["share"] = per_video["inside"] / per_video["mass"]
                per_video["covered"] /= pd.DataFrame(rows).groupby("video").size()
                per_video["method"] = [v.split("/")[1] for v in per_video.index]
                for name, group in per_video.groupby("method"):
                    print(f"{method:<7} {blur:>4} {threshold:>9.3f} {name:<15} {group['share'].min():>10.2f} "
                          f"{group['share'].mean():>11.2f} {group['covered'].mean():>11.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=find_data(), help="folder with ffpp/ and dfdc/")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to time (0: in-process)")
    parser.add_argument("--masks", action="store_true", help="also compare SSIM and pixel masks")
    parser.add_argument("--blurs", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="blur sigmas to compare")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = time_runs(args.data, Path(tmp), args.frames, args.workers)
        if args.masks:
            compare_masks(prepared, args.blurs)

if __name__ == "__main__":
    main()
