"""The checkpoint format: self-describing, versioned, saved atomically, loaded safely and strictly.

A checkpoint is a ``torch.save``'d dict::

    {"format": "deepfake-detector", "version": 1, "model": ModelConfig.to_dict(),
     "state_dict": {...}, "epoch": int, "metrics": {...}, "optimizer": ..., "scheduler": ..., ...,
     "family": "frame",                      # optional: "frame" when absent
     "calibration": Calibration.to_dict(),   # optional: the identity when absent
     "crop_spec": CropSpec.to_dict()}        # optional: the defaults with the model's size when absent

A checkpoint holds one of two model families (:data:`FAMILIES`): a ``frame`` model (a
:class:`DeepfakeClassifier` scoring face crops, described by its ``ModelConfig`` and crop spec) or a
``sequence`` model (an :class:`models.lrnet.LRNet` scoring landmark sequences, described by its
``LRNetConfig`` under ``"model"`` and its ``"landmark_spec"`` instead of a crop spec). A tool that
runs one family only names the family it was given when handed the other.

It is loaded with ``torch.load(weights_only=True)`` (a pickle that tries to run code is refused) and
its weights with ``strict=True`` (a renamed layer is an error, never a silently random model).
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plumbing.fileio import atomic_write
from plumbing.logs import configure_logging
from plumbing.strict import ConfigError
from preprocessing.cropspec import CropSpec, CropSpecError
from preprocessing.landmarks import LandmarkSpec, LandmarkSpecError

from .calibration import Calibration
from .lrnet import LRNet, LRNetConfig
from .statedict import weights_mismatch
from .zoo import DeepfakeClassifier, ModelConfig, build_model

log = logging.getLogger("models.checkpoint")

FORMAT = "deepfake-detector"
VERSION = 1
#: Model family -> what its checkpoints hold: ``frame``: a :class:`DeepfakeClassifier` of face crops;
#: ``sequence``: an :class:`LRNet` of landmark sequences.
FAMILIES = {"frame": "a frame model (face crops)", "sequence": "a sequence model (landmark sequences)"}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, of another format or does not fit its model."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Save ``model`` (a :class:`DeepfakeClassifier`, wrapped or not, or an :class:`LRNet`) with ``extra`` entries
    (epoch, metrics, optimizer and scheduler state...), atomically."""
    model = unwrap(model)
    spec = {"family": "sequence", "landmark_spec": model.spec.to_dict()} if isinstance(model, LRNet) \
        else {"crop_spec": model.spec.to_dict()}
    payload = {"format": FORMAT, "version": VERSION, "model": model.config.to_dict(), **spec,
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, **extra}
    _write(path, payload)


def read_checkpoint(path: str | os.PathLike, family: str | None = None) -> dict[str, Any]:
    """Load and check a checkpoint's dict (on the CPU); ``family``: the only model family accepted
    (None: either). Raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(err))
        if unsafe:
            raise CheckpointError(f"{path}: refused: the file holds {unsafe.group(1)}, code that would run on "
                                  "loading; checkpoints may only hold tensors and plain data") from err
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(err)})") from err
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {_first_line(err)})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (no 'format': '{FORMAT}' entry)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('version')}, this code reads {VERSION}")
    missing = [key for key in ("model", "state_dict") if not isinstance(payload.get(key), dict)]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks its {' and '.join(repr(k) for k in missing)} entry")
    found = payload_family(payload)
    if found not in FAMILIES:
        raise CheckpointError(f"{path}: unknown model family {found!r}; this code reads {sorted(FAMILIES)}")
    if family is not None and found != family:
        raise CheckpointError(f"{path}: holds {FAMILIES[found]}; this takes {FAMILIES[family]} only")
    return payload


def payload_family(payload: dict[str, Any]) -> str:
    """The model family of a checkpoint's dict (``frame`` for checkpoints older than the families)."""
    return payload.get("family", "frame")


def checkpoint_family(path: str | os.PathLike) -> str:
    """The model family of the checkpoint at ``path`` (:data:`FAMILIES`)."""
    return payload_family(read_checkpoint(path))


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               family: str | None = "frame") -> DeepfakeClassifier | LRNet:
    """Rebuild the model a checkpoint describes and load its weights strictly, in eval mode;
    ``family``: the only model family accepted (default: frame models; None: either)."""
    return _model(read_checkpoint(path, family), path).to(device).eval()


def _model(payload: dict[str, Any], path: str | os.PathLike) -> DeepfakeClassifier | LRNet:
    """The model of the checkpoint ``payload`` read from ``path``, its weights, calibration and spec loaded."""
    sequence = payload_family(payload) == "sequence"
    try:
        model = LRNet(LRNetConfig.from_dict(payload["model"])) if sequence \
            else build_model(ModelConfig.from_dict(payload["model"]))
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err
    mismatch = weights_mismatch(model, payload["state_dict"])
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit {'LRNet' if sequence else model.config.encoder}: {mismatch} "
                              "(saved by another architecture or timm version?)")
    model.load_state_dict(payload["state_dict"], strict=True)
    try:
        model.calibration = Calibration.from_dict(payload.get("calibration"))
        if sequence and "landmark_spec" in payload:  # absent: the defaults, the published pairs' input
            model.spec = LandmarkSpec.from_dict(payload["landmark_spec"])
        elif "crop_spec" in payload:  # older checkpoints: the defaults their models were trained with
            model.spec = CropSpec.from_dict(payload["crop_spec"])
    except (ConfigError, CropSpecError, LandmarkSpecError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}") from err
    return model


def amend_checkpoint(path: str | os.PathLike, **entries: Any) -> None:
    """Set ``entries`` (``calibration=...``) in the checkpoint at ``path``, keeping everything else; atomically."""
    _write(path, {**read_checkpoint(path), **entries})


def _write(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save`` a checkpoint dict, atomically."""
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


#: What a shipped checkpoint keeps: everything but the state a resumed run needs.
SHIPPED = ("format", "version", "family", "model", "crop_spec", "landmark_spec", "state_dict", "epoch", "metrics",
           "train", "calibration", "source")


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy the checkpoint ``source`` to ``target`` without its resume state (optimizer, scheduler,
    history...), atomically: a training run's ``last.pt`` made into the file to ship."""
    payload = read_checkpoint(source)
    _model(payload, source)  # it must be a model that loads, not only a readable file
    _write(target, {key: payload[key] for key in SHIPPED if key in payload})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.checkpoint", description=(
        "Copy a checkpoint without its resume state (optimizer, scheduler, history): the file to ship."))
    parser.add_argument("source", type=Path, help="a checkpoint (e.g. runs/NAME/last.pt)")
    parser.add_argument("target", type=Path, help="where to write the checkpoint to ship (e.g. weights/NAME.pt)")
    args = parser.parse_args(argv)
    configure_logging(False)
    try:
        export_checkpoint(args.source, args.target)
    except CheckpointError as err:
        log.error("%s", err)
        return 2
    log.info("wrote %s (%.1f MB)", args.target, args.target.stat().st_size / 1e6)
    return 0


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
