"""Layers that published DFDC models need and timm lacks: the attention gate of Polimi's
EfficientNetAutoAttB4 (icpr2020dfdc), on one block of a timm EfficientNet."""
from __future__ import annotations

import torch
from torch import nn


class AttentionGate(nn.Module):
    """Polimi's EfficientNetAutoAtt gate: a 1x1 convolution of a block's output to one channel,
    whose sigmoid multiplies that output."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


def gate_block(encoder: nn.Module, index: int) -> AttentionGate:
    """An :class:`AttentionGate` applied to the output of block ``index`` of a timm EfficientNet
    ``encoder`` (counted over all stages, as efficientnet-pytorch's ``_blocks``)."""
    blocks = [block for stage in getattr(encoder, "blocks", ()) for block in stage]
    if not 0 <= index < len(blocks):
        raise ValueError(f"no block {index}: the encoder has {len(blocks)} blocks")
    channels = [m for m in blocks[index].modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    gate = AttentionGate(channels)
    blocks[index].register_forward_hook(lambda module, args, output: gate(output))
    return gate
