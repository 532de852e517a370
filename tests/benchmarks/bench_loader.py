"""Training DataLoader throughput with the full augmentation recipe, beside the CPU demo model's
training step rate, printed as a table.

    python -m tests.benchmarks.bench_loader [--data PREPARED] [--samples 320] [--workers 0 1 2]

Rows: samples per second of the loader (structured dropout, mixup 0.25, the winner's pipeline,
normalisation) at 380 px and at the demo model's size, for each worker count; images per second of
one training step of the demo model (``training/configs/cpu_demo.json``: forward, backward, AdamW) on
a ready batch; and the same step fed by the loader; with the step's torch threads at the core count
and at the cores the workers leave free (at least 1). Without ``--data`` a prepared folder is built
from the shared FF++ clips (as the tests' ``prepared_dir``). Not part of the test run: timings are
measured, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from tests.conftest import REPO, build_prepared, find_data
from models.zoo import ModelConfig, build_model
from training.dataset import CropDataset, make_loader

DEMO_CONFIG = REPO / "training" / "configs" / "cpu_demo.json"


def loader_rate(dataset: CropDataset, samples: int, batch_size: int, workers: int) -> tuple[float, float]:
    """(samples per second over the whole pass, start included; seconds to the first batch)."""
    order = [i % len(dataset) for i in range(samples)]
    start = time.perf_counter()
    first = None
    for _ in make_loader(dataset, batch_size, workers=workers, pin_memory=False, sampler=order):
        first = first or time.perf_counter()
    return samples / (time.perf_counter() - start), first - start


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: torch.Tensor) -> None:
    loss = nn.functional.binary_cross_entropy_with_logits(model(images), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def step_rate(model, optimizer, batches) -> float:
    """Images per second of training steps over ``batches`` (an iterable of dataset batches)."""
    count, start = 0, None
    for i, batch in enumerate(batches):
        train_step(model, optimizer, batch["image"], batch["target"])
        if i == 0:  # the first step warms up (allocations, the loader's start)
            start = time.perf_counter()
        else:
            count += len(batch["target"])
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a prepared folder (default: build one from the shared clips)")
    parser.add_argument("--frames", type=int, default=6, help="frames per video when building (default: 6)")
    parser.add_argument("--samples", type=int, default=320, help="samples per loader measurement")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the demo config's")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=12, help="training steps per step measurement")
    args = parser.parse_args(argv)

    demo = json.loads(DEMO_CONFIG.read_text())
    demo_model = ModelConfig.from_dict(demo["model"])
    batch_size = args.batch_size or demo["train"]["batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or build_prepared(find_data(), Path(tmp), frames=args.frames)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}; batch {batch_size}; demo model {demo_model.encoder} "
              f"@ {demo_model.input_size} px")
        print(f"{'measurement':<46} {'size':>5} {'workers':>7} {'per s':>8} {'start s':>8}")
        datasets = {}
        for size in (380, demo_model.input_size):
            config = ModelConfig(demo_model.encoder, size, demo_model.mean, demo_model.std)
            datasets[size] = CropDataset(data, config, train=True, mixup=0.25, seed=0)
            for workers in args.workers:
                rate, startup = loader_rate(datasets[size], args.samples, batch_size, workers)
                print(f"{'loader, full recipe (samples)':<46} {size:>5} {workers:>7} {rate:>8.1f} {startup:>8.2f}")

        torch.manual_seed(0)
        model = build_model(demo_model).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        size = demo_model.input_size
        ready = {"image": torch.randn(batch_size, 3, size, size), "target": torch.rand(batch_size)}
        cores = torch.get_num_threads()
        for threads in sorted({cores, 1}, reverse=True):
            torch.set_num_threads(threads)
            rate = step_rate(model, optimizer, [ready] * (args.steps + 1))
            label = f"train step on a ready batch, {threads} thread(s)"
            print(f"{label:<46} {size:>5} {'-':>7} {rate:>8.1f} {'':>8}")
        for workers in [w for w in args.workers if w]:
            for threads in sorted({cores, max(1, cores - workers)}, reverse=True):
                torch.set_num_threads(threads)
                order = [i % len(datasets[size]) for i in range(batch_size * (args.steps + 1))]
                loader = make_loader(datasets[size], batch_size, workers=workers, pin_memory=False, sampler=order)
                rate = step_rate(model, optimizer, loader)
                label = f"train step fed by the loader, {threads} thread(s)"
                print(f"{label:<46} {size:>5} {workers:>7} {rate:>8.1f} {'':>8}")
        torch.set_num_threads(cores)


if __name__ == "__main__":
    main()
