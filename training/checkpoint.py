"""The checkpoint format: self-describing, versioned, saved atomically, loaded safely and strictly.

A checkpoint is a ``torch.save``'d dict::

    {"format": "deepfake-detector", "version": 1, "model": ModelConfig.to_dict(),
     "state_dict": {...}, "epoch": int, "metrics": {...}, "optimizer": ..., "scheduler": ..., ...}

It is loaded with ``torch.load(weights_only=True)`` (a pickle that tries to run code is refused) and
its weights with ``strict=True`` (a renamed layer is an error, never a silently random model).
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from preprocessing.fileio import atomic_write

from .zoo import ConfigError, DeepfakeClassifier, ModelConfig, build_model

FORMAT = "deepfake-detector"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, of another format or does not fit its model."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Save ``model`` (a :class:`DeepfakeClassifier`, wrapped or not) with ``extra`` entries
    (epoch, metrics, optimizer and scheduler state...), atomically."""
    model = unwrap(model)
    payload = {"format": FORMAT, "version": VERSION, "model": model.config.to_dict(),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, **extra}
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a checkpoint's dict (on the CPU). Raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
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
    return payload


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> DeepfakeClassifier:
    """Rebuild the model a checkpoint describes and load its weights strictly, in eval mode."""
    payload = read_checkpoint(path)
    try:
        model = build_model(ModelConfig.from_dict(payload["model"]))
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err
    mismatch = weights_mismatch(model, payload["state_dict"])
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit {model.config.encoder}: {mismatch} "
                              "(saved by another architecture or timm version?)")
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.to(device).eval()


def weights_mismatch(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> str:
    """Why ``state_dict`` does not fit ``model`` exactly — missing keys, unexpected keys, tensors of
    another shape, each named (a few of each) — or "" when it fits."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [f"{k} {_shape(state_dict[k])} in file vs {_shape(expected[k])} in model"
              for k in sorted(set(expected) & set(state_dict)) if _shape(state_dict[k]) != _shape(expected[k])]
    if not (missing or unexpected or shapes):
        return ""
    return "; ".join(f"{name} {_few(keys)}" for name, keys in
                     (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes:", shapes)) if keys)


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
