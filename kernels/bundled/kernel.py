"""The Kaggle notebook's script, copied into every bundle by ``kernels.bundle`` (standard library only).

Installs the bundle's wheels offline, finds the competition's test folder, runs ``kernels.predict`` on it
from the bundle's code under the deadline left, and writes ``submission.csv`` in the working folder.
Flags it does not know are passed on to ``kernels.predict`` (``--frames 16``, ``--workers 2``...)::

    python kernel.py [--input /kaggle/input] [--working /kaggle/working] [--deadline SECONDS] [PREDICT FLAGS]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.monotonic()
BUNDLE = Path(__file__).resolve().parent
#: Where the DFDC competition mounts its test videos; other competitions: the first ``test_videos`` found.
COMPETITION = "deepfake-detection-challenge"

log = logging.getLogger("kernel")


def find_test_videos(input_root: Path) -> Path:
    """``<input>/deepfake-detection-challenge/test_videos``, else the first ``test_videos`` folder below."""
    preferred = input_root / COMPETITION / "test_videos"
    if preferred.is_dir():
        return preferred
    found = sorted(p for p in input_root.rglob("test_videos") if p.is_dir())
    if not found:
        raise SystemExit(f"{input_root}: no test_videos folder (attach the competition's data)")
    return found[0]


def install() -> None:
    """Install the bundle's pinned wheels, without any index (the notebook has no internet)."""
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
                             str(BUNDLE / "wheels"), "-r", str(BUNDLE / "requirements.txt")])
    if result.returncode:
        raise SystemExit(f"{BUNDLE}: pip could not install the bundle's wheels offline (its message is above)")


def main(argv: list[str] | None = None) -> int:
    settings = json.loads((BUNDLE / "bundle.json").read_text())
    parser = argparse.ArgumentParser(prog="kernel.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=Path("/kaggle/input"), help="Kaggle's input folder")
    parser.add_argument("--working", type=Path, default=Path("/kaggle/working"),
                        help="where submission.csv is written (Kaggle's output folder)")
    parser.add_argument("--deadline", type=float, default=settings["deadline"],
                        help="seconds from start to the written submission (default: %(default)s)")
    args, predict_flags = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install()
    videos = find_test_videos(args.input)
    left = args.deadline - (time.monotonic() - STARTED)
    log.info("installed in %.0f s; scoring %s with %.0f s left", time.monotonic() - STARTED, videos, left)
    path = [str(BUNDLE / "code"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    args.working.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "kernels.predict", "--videos", str(videos),
               "--out", str(args.working / "submission.csv"), "--deadline", f"{left:.0f}", *predict_flags]
    return subprocess.run(command, env=env, cwd=args.working).returncode


if __name__ == "__main__":
    raise SystemExit(main())
