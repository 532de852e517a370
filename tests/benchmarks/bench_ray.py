"""Videos per minute of the kernel: the local engine against Ray embedded, with 1 and 2 workers.

    python -m tests.benchmarks.bench_ray [--weights W.pt ...] [--frames 16] [--limit 8] [--workers 1 2]

Scores the same shared clips with :func:`kernels.runner.run` per engine and worker count. For Ray,
the table gives the start-up (``ray.init`` of an embedded session) apart, then a cold run (its
worker processes and model replica start inside it) and a warm run in the same session (they are
reused). Not part of the test run.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from kernels.ensemble import Ensemble
from kernels.inputs import default_weights
from kernels.runner import run
from kernels.scoring import Settings
from plumbing.cluster import ray_session
from preprocessing.video import find_videos
from tests.conftest import find_data


def per_minute(clips: list[Path], ensemble: Ensemble, settings: Settings) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run([(c.name, c) for c in clips], ensemble, Path(tmp) / "s.csv", settings)
        return 60 * len(clips) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=find_data())
    parser.add_argument("--weights", type=Path, nargs="+", default=default_weights())
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--limit", type=int, default=8, help="clips from the shared FF++ tree (default: 8)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    clips = find_videos(args.data / "ffpp")[:: 2][: args.limit]
    ensemble = Ensemble.load(args.weights)
    print(f"{len(clips)} clips, {args.frames} frames, models {ensemble.names} in {ensemble.precisions}")
    print(f"{'engine':<8} {'workers':>7} {'start-up s':>10} {'cold videos/min':>16} {'warm videos/min':>16}")
    for workers in args.workers:
        local = per_minute(clips, ensemble, Settings(frames=args.frames, workers=workers))
        print(f"{'local':<8} {workers:>7} {'-':>10} {local:>16.1f} {'-':>16}", flush=True)
        start = time.perf_counter()
        with ray_session(num_cpus=workers):
            startup = time.perf_counter() - start
            settings = Settings(frames=args.frames, workers=workers, engine="ray")
            cold, warm = (per_minute(clips, ensemble, settings) for _ in range(2))
        print(f"{'ray':<8} {workers:>7} {startup:>10.1f} {cold:>16.1f} {warm:>16.1f}", flush=True)


if __name__ == "__main__":
    main()
