"""Published DFDC checkpoints -> checkpoints of ours, with the crop spec their solution used.

    python -m training.convert [--format selim] --out weights/NAME.pt FILE
    python -m training.convert [--format selim] --out weights/ FILE [FILE...]

One output per input (``--out`` a folder when several files are given: each named after its
input). The file must match its format's layout exactly: a missing, extra, renamed or reshaped key
is refused with the key named, never loaded loosely. ``--format`` is guessed from the keys when
omitted. The output loads with :func:`models.checkpoint.load_model` and runs in ``kernels.predict``
(``--preset selim`` for the winner's whole recipe).
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from preprocessing.cropspec import CropSpec
from preprocessing.logs import configure_logging

from models.checkpoint import save_checkpoint
from models.statedict import layout_mismatch
from models.zoo import ModelConfig, build_model

log = logging.getLogger("training.convert")

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


class ConvertError(ValueError):
    """A file is unreadable or does not match the layout of its format."""


@dataclass(frozen=True)
class Format:
    """A published layout: the model it holds (``config``), how its faces were cut and scored
    (``spec``), the wrapper around its weights (``entries``: the top-level keys of a dict, or None
    for a bare state dict), our key -> theirs (``rename``) and their keys we drop (``dropped``: key ->
    shape, given our keys' shapes; checked, then left out)."""

    config: ModelConfig
    spec: CropSpec
    entries: frozenset[str] | None
    rename: Callable[[str], str]
    dropped: Callable[[dict[str, tuple[int, ...]]], dict[str, tuple[int, ...]]]
    marker: str  # a key only this layout holds, to guess the format

    def weights(self, payload: Any, path: Path) -> dict[str, torch.Tensor]:
        if self.entries is None:
            return payload
        if not isinstance(payload, dict) or set(payload) != self.entries:
            found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise ConvertError(f"{path}: expected a dict with exactly the keys {sorted(self.entries)}, found {found}")
        return payload["state_dict"]


def _selim_dropped(ours: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    width = ours["head.weight"][1]
    return {"module.encoder.classifier.weight": (1000, width), "module.encoder.classifier.bias": (1000,)}


FORMATS = {
    # 1st place, selimsef/dfdc_deepfake_challenge: training/zoo/classifiers.py DeepFakeClassifier (timm
    # tf_efficientnet_b7_ns with its unused 1000-class head; fc on the average-pooled forward_features),
    # saved under DataParallel ("module."); kernel_utils.py for the crop: box corners int(), h // 3 and
    # w // 3 per side, isotropic resize to 380 (INTER_AREA down, INTER_CUBIC up, int sizes), centred on black.
    "selim": Format(
        config=ModelConfig("tf_efficientnet_b7.ns_jft_in1k", 380, **IMAGENET),
        spec=CropSpec((380, 380), margin=(1 / 3, 1 / 3), box_rule="truncate", resize="pad", shrink="area",
                      enlarge="cubic", aggregate="confident", **IMAGENET),
        entries=frozenset({"epoch", "state_dict", "bce_best"}),
        rename=lambda key: "module.fc." + key[5:] if key.startswith("head.") else "module." + key,
        dropped=_selim_dropped,
        marker="module.fc.weight",
    ),
}


def _read(path: Path) -> Any:
    """The file's contents, loaded without running code (numpy scalars, as in the winner's files, allowed)."""
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    scalar = np._core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *{type(np.dtype(t)) for t in "fdl"}]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvertError(f"{path}: not a readable torch file ({first})") from err


def guess_format(payload: Any) -> str | None:
    """The format whose marker key the file holds, or None."""
    keys = payload.get("state_dict", payload) if isinstance(payload, dict) else {}
    return next((name for name, f in FORMATS.items() if isinstance(keys, dict) and f.marker in keys), None)


@functools.lru_cache(maxsize=None)
def our_layout(name: str) -> dict[str, tuple[int, ...]]:
    """Every key of our model for format ``name``, with its shape (built on the meta device: no
    memory, no initialisation)."""
    with torch.device("meta"):
        model = build_model(FORMATS[name].config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def our_weights(payload: Any, name: str, source: Path) -> dict[str, torch.Tensor]:
    """The weights of the published ``payload`` (read from ``source``) under our names, after checking
    that they match format ``name``'s layout exactly; :class:`ConvertError` names what does not."""
    layout, ours = FORMATS[name], our_layout(name)
    weights = layout.weights(payload, source)
    expected = {layout.rename(key): shape for key, shape in ours.items()} | layout.dropped(ours)
    mismatch = layout_mismatch(expected, weights) if isinstance(weights, dict) else "not a state dict"
    if mismatch:
        raise ConvertError(f"{source}: not the {name} layout: {mismatch}")
    return {key: weights[layout.rename(key)] for key in ours}


def convert(source: str | os.PathLike, target: str | os.PathLike, format: str | None = None) -> str:
    """Write the published file ``source`` as a checkpoint of ours at ``target``; returns the format.
    Raises :class:`ConvertError` naming the file and the keys that do not fit."""
    source = Path(source)
    payload = _read(source)
    name = format or guess_format(payload)
    if name not in FORMATS:
        raise ConvertError(f"{source}: " + (f"unknown format {name!r}" if name else "cannot tell the format from its keys")
                           + f"; choose one of {sorted(FORMATS)} with --format")
    weights = our_weights(payload, name, source)
    with torch.device("meta"):
        model = build_model(FORMATS[name].config)
    model.load_state_dict(weights, strict=True, assign=True)
    model.spec = FORMATS[name].spec
    extra = {k: float(v) if isinstance(v, np.generic) else v for k, v in payload.items() if k != "state_dict"} \
        if FORMATS[name].entries else {}
    save_checkpoint(target, model.eval(), source={"format": name, "file": source.name, **extra})
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE", help="published checkpoint file(s)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the output .pt (one FILE), or a folder: one <FILE name>.pt each")
    parser.add_argument("--format", choices=sorted(FORMATS), help="the layout (default: guessed from the keys)")
    args = parser.parse_args(argv)
    configure_logging(False)
    single = len(args.files) == 1 and args.out.suffix == ".pt"
    failed = 0
    for file in args.files:
        target = args.out if single else args.out / f"{file.stem}.pt"
        try:
            name = convert(file, target, args.format)
        except ConvertError as err:
            log.error("%s", err)
            failed += 1
            continue
        log.info("%s (%s) -> %s", file, name, target)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
