"""Does a state dict fit a model? The one comparison that checkpoints and pretrained weights share."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def weights_mismatch(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> str:
    """Why ``state_dict`` does not fit ``model`` exactly — missing keys, unexpected keys, tensors of
    another shape, each named (a few of each) — or "" when it fits."""
    return layout_mismatch(model.state_dict(), state_dict)


def layout_mismatch(expected: dict[str, Any], state_dict: dict[str, Any]) -> str:
    """:func:`weights_mismatch` against a layout: ``expected`` maps each key to a tensor or a shape."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [f"{k} {_shape(state_dict[k])} in file vs {_shape(expected[k])} in model"
              for k in sorted(set(expected) & set(state_dict)) if _shape(state_dict[k]) != _shape(expected[k])]
    if not (missing or unexpected or shapes):
        return ""
    return "; ".join(f"{name} {_few(keys)}" for name, keys in
                     (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes:", shapes)) if keys)


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return tuple(value) if isinstance(value, (tuple, torch.Size)) else None


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")
