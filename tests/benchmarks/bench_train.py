"""Training images per second on this machine, fp32 against bf16 autocast and channels_last, as a table.

    python -m tests.benchmarks.bench_train [--configs cpu_demo efficientnet_b7] [--steps N] [--batch B] [--threads T]

Each config's model (random weights) trains on real face crops of the shared data through
:func:`training.engine.train_one_epoch` — the loop ``python -m training.train`` runs — with SGD and
gradient clipping: one warm-up step, then ``--steps`` timed steps per variant, of which the median is
reported. Data loading is not included (see the dataset's own benchmark). Not part of the test run:
timings are measured, never asserted.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time
from pathlib import Path

import cv2
import torch

from tests.conftest import find_data
from models.precision import Precision
from models.zoo import build_model, to_batch
from training.engine import train_one_epoch
from training.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
#: (precision, channels_last) variants: the two the issue asks for, and each change on its own.
VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))
#: Default (steps, batch) per config: the demo runs its own batch; B7 at 380 px gets a few small steps.
DEFAULTS = {"cpu_demo": (10, None), "efficientnet_b7": (2, 2)}


def face_batch(data_dir: Path, config, batch: int) -> dict:
    files = sorted((data_dir / "face_images").rglob("*.png"))[:batch]
    files = (files * batch)[:batch]
    crops = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    return {"image": to_batch(crops, config), "target": torch.tensor([float(f.parent.name == "FAKE") for f in files])}


def measure(config_name: str, steps: int, batch: int | None, variants, data_dir: Path) -> list[dict]:
    config = load_config(CONFIGS / f"{config_name}.json")
    batch = batch or config.train.batch_size
    images = face_batch(data_dir, config.model, batch)
    rows = []
    for precision_name, channels_last in variants:
        torch.manual_seed(0)
        precision = Precision.resolve(precision_name, "cpu", channels_last)
        model = precision.model(build_model(config.model))
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        times = []
        for _ in range(steps + 1):  # the first step warms up
            start = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):  # no progress bar per step
                train_one_epoch(model, [images], optimizer, scheduler, precision, clip_grad_norm=1.0)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times[1:])  # the median resists other jobs on a shared machine
        rows.append({"config": config_name, "encoder": config.model.encoder, "size": config.model.input_size,
                     "batch": batch, "precision": precision_name, "channels_last": channels_last,
                     "s_per_step": seconds, "images_per_s": batch / seconds})
        print(format_row(rows[-1], rows[0]), flush=True)
    return rows


def format_row(row: dict, baseline: dict) -> str:
    return (f"{row['config']:<16} {row['encoder']:<31} {row['size']:>4} {row['batch']:>5} {row['precision']:>5} "
            f"{'yes' if row['channels_last'] else 'no':>13} {row['s_per_step']:>10.3f} {row['images_per_s']:>9.3g} "
            f"{row['images_per_s'] / baseline['images_per_s']:>7.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULTS), help="config names in training/configs")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default: 10 for cpu_demo, 2 for B7)")
    parser.add_argument("--batch", type=int, help="images per step (default: the config's; 2 for B7)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--variants", choices=("all", "issue"), default="all",
                        help="'issue': only fp32 and bf16 + channels_last")
    parser.add_argument("--data", type=Path, default=find_data(), help="folder with face_images/")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = VARIANTS if args.variants == "all" else (VARIANTS[0], VARIANTS[-1])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'config':<16} {'encoder':<31} {'size':>4} {'batch':>5} {'prec':>5} {'channels_last':>13} "
          f"{'s/step':>10} {'images/s':>9} {'vs fp32':>8}")
    for name in args.configs:
        steps, batch = DEFAULTS.get(name, (5, None))
        measure(name, args.steps or steps, args.batch or batch, variants, args.data)


if __name__ == "__main__":
    main()
