"""Build the folder to upload as a Kaggle dataset: the kernel with everything it needs, offline.

    python -m kernels.bundle --out DIR [--weights W.pt ...] [--stacking S.json] [--skip PKG ...] [--python 3.11]

``DIR`` receives ``wheels/`` (a binary wheel of every runtime requirement not skipped and of each of
their dependencies, resolved for CPython ``--python`` on manylinux x86_64), ``requirements.txt``
(exactly those, pinned), ``code/`` (the project's packages, with the checkpoints in ``code/weights/``
and the stacking file, if any, as ``code/weights/stacking.json``, which the kernel then applies),
``kernel.py`` and ``kernel.ipynb`` (install offline, find the test folder, run the kernel under the
deadline, write ``/kaggle/working/submission.csv``) and ``bundle.json`` (these settings). A
requirement without a binary wheel for the target is refused, by name: a notebook offline cannot
build one.

``--skip`` defaults to what the Kaggle image ships and the kernel must not replace: torch and
torchvision, the CUDA builds that match the image's GPU drivers (their own dependencies — CUDA
libraries, triton, sympy... — are left out with them, unless a kept package needs them too).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from models.stacking import Stacking, StackingError
from plumbing.cli import add_field_flag
from plumbing.fileio import file_digest
from plumbing.logs import configure_logging

from .kaggle import KAGGLE_LIMIT_S
from .inputs import STACKING, resolve_models

log = logging.getLogger("kernels.bundle")

REPO = Path(__file__).resolve().parents[1]
#: The kernel's rooms (it never imports ``training``), copied into ``code/``.
PACKAGES = ("plumbing", "preprocessing", "models", "kernels", "submission")
#: ``kernel.py`` and ``kernel.ipynb``, copied into the bundle as they are.
BUNDLED = Path(__file__).resolve().parent / "bundled"
#: Packages the Kaggle image ships that the bundle leaves to it (check: ``pip list`` in a notebook).
KAGGLE_SHIPS = ("torch", "torchvision")
#: Kaggle's image runs Ubuntu 22.04 (glibc 2.35): manylinux wheels built for glibc 2.35 or older run on it.
GLIBC_MINOR = 35


class BundleError(RuntimeError):
    """The bundle cannot be built; the message names the requirement or file and the cause."""


@dataclass
class BundleConfig:
    """What goes into a bundle."""

    out: Path
    weights: list[Path] | None = None  # None: as kernels.predict's default (kernels.inputs.resolve_models)
    stacking: Path | None = None
    skip: list[str] = field(default_factory=lambda: list(KAGGLE_SHIPS))
    python: str = "3.11"  # the Kaggle image's
    deadline: float = KAGGLE_LIMIT_S - 1800  # half an hour for start-up, installation and writing
    requirements: Path = REPO / "requirements.txt"


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Pillow`` = ``pillow``, ``typing_extensions`` = ``typing-extensions``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def target_options(python: str) -> list[str]:
    """pip's options for binary wheels that run on CPython ``python`` on manylinux x86_64 (glibc 2.35)."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    abi = "cp" + python.replace(".", "")
    return ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", abi,
            *(option for platform in platforms for option in ("--platform", platform))]


def pip(*args: str, python: str) -> None:
    """Run pip for the target; a requirement without a binary wheel is a :class:`BundleError` naming it."""
    result = subprocess.run([sys.executable, "-m", "pip", *args, *target_options(python)],
                            capture_output=True, text=True)
    if result.returncode == 0:
        return
    missing = re.search(r"No matching distribution found for (\S+)", result.stderr)
    if missing:
        raise BundleError(f"{missing.group(1)}: no binary wheel for CPython {python} on manylinux x86_64 "
                          "(a notebook without internet cannot build one)")
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    raise BundleError(f"pip {args[0]} failed: {errors[-1] if errors else result.stderr.strip()[-500:]}")


def resolve(requirements: Path, python: str) -> list[dict]:
    """pip's resolution of ``requirements`` for the target: one installation-report item per distribution."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        pip("install", "--dry-run", "--ignore-installed", "--quiet", "--target", str(Path(tmp) / "target"),
            "--report", str(report), "-r", str(requirements), python=python)
        return json.loads(report.read_text())["install"]


def keep(resolved: list[dict], skip: list[str]) -> dict[str, str]:
    """``{name: version}`` of the requested distributions not skipped and everything they depend on,
    without passing through a skipped one (what only torch needs stays with torch). Dependencies
    behind an extra are not followed; other markers are taken as true (a wheel too many, never one
    too few)."""
    skipped = {normalise(s) for s in skip}
    items = {normalise(i["metadata"]["name"]): i["metadata"] for i in resolved}
    todo = [normalise(i["metadata"]["name"]) for i in resolved if i.get("requested")]
    kept: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in kept or name in skipped or name not in items:
            continue
        kept[name] = items[name]["version"]
        for requirement in items[name].get("requires_dist", []):
            if "extra ==" not in requirement.partition(";")[2].replace('"', "").replace("'", ""):
                todo.append(normalise(re.match(r"[A-Za-z0-9._-]+", requirement).group()))
    return dict(sorted(kept.items()))


def copy_code(weights: list[Path], stacking: Path | None, code: Path) -> None:
    """The project's packages (no caches), the checkpoints and the stacking file, where ``kernels.predict``
    looks for them."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, code / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "bundled"))
    (code / "weights").mkdir()
    for path in weights:
        shutil.copy2(path, code / "weights" / path.name)
    if stacking is not None:
        shutil.copy2(stacking, code / "weights" / STACKING.name)


def build(config: BundleConfig) -> dict[str, str]:
    """Write the bundle into ``config.out`` (built beside it and renamed into place when complete);
    returns the pinned requirements."""
    out = Path(config.out)
    if out.exists():
        raise BundleError(f"{out}: already exists; give a new folder")
    try:
        weights, stacking = resolve_models(config.weights, config.stacking)
        if not weights:
            raise BundleError("no checkpoint: pass --weights (see docs/train.md)")
        for path in weights:
            if not Path(path).is_file():
                raise BundleError(f"{path}: no such checkpoint")
        if stacking is not None:  # the kernel would refuse it on Kaggle: refuse it here
            Stacking.load(stacking).check(stacking, {Path(w).stem: file_digest(w) for w in weights})
    except StackingError as err:
        raise BundleError(str(err)) from None
    log.info("resolving %s for CPython %s on manylinux x86_64, leaving out %s", config.requirements,
             config.python, ", ".join(config.skip) or "nothing")
    pins = keep(resolve(config.requirements, config.python), config.skip)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "wheels").mkdir(parents=True)
        log.info("downloading %d wheels", len(pins))
        pip("download", "--quiet", "--no-deps", "--dest", str(partial / "wheels"),
            *(f"{name}=={version}" for name, version in pins.items()), python=config.python)
        (partial / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
        copy_code(weights, stacking, partial / "code")
        log.info("shipping %d checkpoint(s)%s", len(weights), f" combined by {stacking}" if stacking else "")
        for name in ("kernel.py", "kernel.ipynb"):
            shutil.copy2(BUNDLED / name, partial / name)
        settings = {**asdict(config), "out": str(out), "weights": [Path(w).name for w in weights],
                    "stacking": stacking and STACKING.name, "requirements": str(config.requirements)}
        (partial / "bundle.json").write_text(json.dumps(settings, indent=1))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    return pins


def build_parser() -> argparse.ArgumentParser:
    defaults = BundleConfig(Path())
    p = argparse.ArgumentParser(prog="python -m kernels.bundle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the bundle folder to create")
    p.add_argument("--weights", type=Path, nargs="+",
                   help="checkpoints (default: as kernels.predict's: the members of weights/stacking.json where it "
                        "exists, else every frame model in weights/)")
    p.add_argument("--stacking", type=Path, help="a stacking file to ship (as kernels.predict's --stacking; its "
                   "members, from beside it, unless --weights names them)")
    p.add_argument("--skip", nargs="*", default=defaults.skip,
                   help="requirements the Kaggle image already ships (default: %(default)s)")
    add_field_flag(p, defaults, "python", "the notebook's Python")
    add_field_flag(p, defaults, "deadline", "kernel.py's seconds from start to written submission: the 9-hour limit "
                   "less 30 minutes")
    add_field_flag(p, defaults, "requirements", "the requirements to bundle")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    config = BundleConfig(args.out, args.weights, args.stacking, args.skip, args.python, args.deadline, args.requirements)
    try:
        pins = build(config)
    except BundleError as err:
        log.error("%s", err)
        return 2
    except OSError as err:  # a full disk, an unwritable folder: nothing is left under --out
        log.error("cannot write %s: %s", args.out, err)
        return 3
    log.info("wrote %s: %d wheels; upload it as a Kaggle dataset", args.out, len(pins))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
