"""The CUDA paths on a real card, end to end, as a table: run it whenever a GPU machine is at hand.

    python -m tests.benchmarks.gpu_check [--steps 10] [--frames 8] [--data DIR]

Training: the tiny test model (MobileNetV3 at 64 px) on real face crops of the shared data, three
epochs in each precision the card runs (fp32, fp16 with its gradient scaler, bf16 where native),
once unbroken and once cut off after the first epoch and resumed; plus a run begun on the CPU
(``auto``: fp32) and resumed on the card, where ``auto`` resolves to fp16 or bf16. Kernel: the
shipped ``weights/lite0.pt`` on two shared clips (``tests.conftest.DEMO_CLIPS``) in fp32 and fp16.
Prints what ``auto`` picks on this card and one row per run: seconds, the validation log-loss, the
largest weight difference between the resumed and the unbroken run (not 0 on a GPU: its kernels need
not be deterministic), the largest label difference from fp32. On a machine without CUDA it says so
and exits 0. Not part of the test run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from kernels.api import load_ensemble, score_videos
from kernels.inputs import default_weights
from models.precision import Precision, auto_precision
from plumbing.device import DeviceError, check_device
from tests.conftest import DEMO_CLIPS, find_data
from tests.fakecuda import hide_cuda
from tests.test_train import TINY, prepare_faces, tiny_train_config
from training import train as train_module
from training.config import RunConfig
from training.train import fit, make_datasets


class _CutOff(Exception):
    """Stands for a kill after the first epoch (its last.pt written)."""


def _train(prepared: Path, out: Path, precision: str, steps: int, cut: bool, resume: bool = False):
    """Three epochs of the tiny model in ``out``; ``cut``: stop when the second epoch starts."""
    config = tiny_train_config(epochs=3, iterations=steps, batch_size=8, precision=precision, workers=2)
    train_set, val_set = make_datasets(prepared, 0, RunConfig(TINY, config))
    epochs, original = [], train_module.train_one_epoch

    def counted(*args, **kwargs):
        epochs.append(1)
        if cut and len(epochs) == 2:
            raise _CutOff
        return original(*args, **kwargs)

    train_module.train_one_epoch = counted
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # no progress bars
            return fit(TINY, config, train_set, val_set, out, resume=resume)
    except _CutOff:
        return None
    finally:
        train_module.train_one_epoch = original


def _difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pairs = zip(a.state_dict().values(), b.state_dict().values())
    return max((x.float() - y.float()).abs().max().item() for x, y in pairs if x.is_floating_point())


def training_rows(prepared: Path, folder: Path, steps: int) -> list[tuple]:
    rows = []
    names = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported(including_emulation=False) else [])
    for name in names:
        start = time.perf_counter()
        whole = _train(prepared, folder / f"{name}-whole", name, steps, cut=False)
        seconds = time.perf_counter() - start
        _train(prepared, folder / f"{name}-cut", name, steps, cut=True)
        resumed = _train(prepared, folder / f"{name}-cut", name, steps, cut=False, resume=True)
        rows.append(("train 3 epochs, cut + resumed", name, seconds, whole.history[-1]["val_logloss"],
                     _difference(whole.model, resumed.model)))
    with pytest.MonkeyPatch.context() as patch:  # begun on the CPU
        hide_cuda(patch)
        _train(prepared, folder / "auto-moved", "auto", steps, cut=True)
    start = time.perf_counter()
    moved = _train(prepared, folder / "auto-moved", "auto", steps, cut=False, resume=True)
    rows.append(("train: cut on the CPU (fp32), resumed on the card", f"auto = {auto_precision('cuda')}",
                 time.perf_counter() - start, moved.history[-1]["val_logloss"], float("nan")))
    return rows


def kernel_rows(data: Path, folder: Path, frames: int) -> list[tuple]:
    clips = [data / clip for clip in DEMO_CLIPS]
    rows, labels = [], {}
    for name in ("fp32", "fp16"):
        ensemble = load_ensemble(default_weights(), precision=name)
        start = time.perf_counter()
        scores = score_videos(clips, ensemble, folder / name / "submission.csv", frames=frames, workers=1)
        labels[name] = scores.videos.set_index("filename")["label"]
        ok = int((scores.videos["status"] == "ok").sum())
        rows.append((f"kernel, 2 clips x {frames} frames ({ok} scored)", name, time.perf_counter() - start,
                     float("nan"), (labels[name] - labels["fp32"]).abs().max()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="training steps per epoch (default: 10)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip for the kernel (default: 8)")
    parser.add_argument("--data", type=Path, default=find_data(), help="the shared data folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not torch.cuda.is_available():
        print(f"no CUDA device on this machine (torch {torch.__version__}): nothing to check; run this on a GPU machine")
        return 0
    try:
        device = check_device("cuda")
    except DeviceError as err:
        print(err)
        return 2
    if args.data is None:
        print("shared data not found: pass --data")
        return 2
    major, minor = torch.cuda.get_device_capability(device)
    print(f"{torch.cuda.get_device_name(device)} (sm_{major}{minor}), torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}); auto: training {Precision.resolve('auto', device).name}, "
          f"kernel {auto_precision(device)}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepared = prepare_faces(args.data, folder / "prepared", 12)
        rows = training_rows(prepared, folder, args.steps) + kernel_rows(args.data, folder, args.frames)
    print("| check | precision | seconds | val log-loss | max difference (weights: resumed vs unbroken; "
          "labels: vs fp32) |")
    print("|---|---|---:|---:|---:|")
    for check, precision, seconds, logloss, difference in rows:
        print(f"| {check} | {precision} | {seconds:.1f} | {logloss:.4f} | {difference:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
