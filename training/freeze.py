"""Keeping an encoder's early stages frozen for the first epochs of a run.

A stage is one of timm's coarse parameter groups of the encoder (``group_matcher(coarse=True)``), in
order from the input: for an EfficientNet the stem (``conv_stem``, ``bn1``), then each block stage;
for Xception each entry block. Frozen parameters get no gradient, so the optimizer leaves them (and
their weight decay) alone; their batch norms still normalise with the batch's statistics.
"""
from __future__ import annotations

from timm.models import group_parameters
from torch import nn

from plumbing.strict import ConfigError


def stages(encoder: nn.Module) -> list[list[str]]:
    """The encoder's parameter names, stage by stage from the input."""
    groups = group_parameters(encoder, encoder.group_matcher(coarse=True))
    return [groups[key] for key in sorted(groups)]


def freeze_early(model: nn.Module, count: int) -> bool:
    """Freeze the first ``count`` stages of ``model.encoder`` and let every other parameter of it learn
    (``count`` 0: all learn); returns whether anything changed. :class:`ConfigError` when ``count``
    would freeze every stage."""
    named = stages(model.encoder)
    if count >= len(named):
        raise ConfigError(f"freeze_stages {count}: {type(model.encoder).__name__} has {len(named)} stages, "
                         f"at most {len(named) - 1} may be frozen")
    frozen = {name for group in named[:count] for name in group}
    changed = False
    for name, parameter in model.encoder.named_parameters():
        trainable = name not in frozen
        changed |= parameter.requires_grad != trainable
        parameter.requires_grad_(trainable)
    return changed
