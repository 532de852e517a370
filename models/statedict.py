"""Does a state dict fit a model? The one comparison that checkpoints and pretrained weights share."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


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
