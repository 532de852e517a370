"""LRNet (Sun et al., CVPR 2021): a face video judged by how its 68 facial landmarks move.

Two small bidirectional-GRU networks read a block of ``block`` consecutive frames (30 at the video's
own rate): ``g1`` the landmark positions (``block`` x 136: 68 x (x, y), normalised as the landmark
spec says), ``g2`` their ``block - 1`` frame-to-frame differences. Each ends in a two-class softmax
(index 1 = manipulated); a block's fake probability is the mean of the two. A video's score is made
from its blocks' logits (the kernel's ``logitmean`` rule) and the checkpoint's calibration.

An :class:`LRNetConfig` (sizes, dropout, block length) and the :class:`LandmarkSpec` travel in every
checkpoint of this family (``models.checkpoint``), as a frame model's :class:`ModelConfig` and crop
spec do; :class:`LandmarkSpec`'s defaults are the published pairs' input (the authors' pipeline).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from plumbing.strict import ConfigError, strict_fields
from preprocessing.landmarks import LandmarkSpec

from .calibration import Calibration

#: 68 landmarks x (x, y): the width of one frame's input.
FEATURES = 136

@dataclass(frozen=True)
class LRNetConfig:
    """What an LRNet is: ``features`` per frame (136 = 68 x (x, y)), ``hidden`` units of each GRU
    direction, ``layers`` of GRU, ``residual`` units of the residual MLP after it, ``dropout`` of the
    head (training only), ``block``: frames per block (g2 reads ``block - 1`` differences)."""

    features: int = FEATURES
    hidden: int = 32
    layers: int = 1
    residual: int = 64
    dropout: float = 0.5
    block: int = 30

    def __post_init__(self):
        sizes = (self.features, self.hidden, self.layers, self.residual)
        if not all(isinstance(v, int) and v > 0 for v in sizes) or not isinstance(self.block, int) \
                or self.block < 2 or not 0 <= self.dropout < 1:
            raise ConfigError(f"LRNet config {self}: features, hidden, layers and residual must be ints > 0, "
                              "block an int >= 2, dropout in [0, 1)")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LRNetConfig":
        return cls(**strict_fields(cls, values, "LRNet config"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class GRUBranch(nn.Module):
    """One of LRNet's two networks: a bidirectional GRU started from a learned state, its final
    states (every layer, both directions) through a residual MLP, then two class logits."""

    def __init__(self, config: LRNetConfig):
        super().__init__()
        width = 2 * config.layers * config.hidden
        self.initial = nn.Parameter(torch.zeros(2 * config.layers, 1, config.hidden))
        self.gru = nn.GRU(config.features, config.hidden, num_layers=config.layers, batch_first=True,
                          bidirectional=True)
        self.dropout = nn.Dropout(config.dropout)
        self.mlp = nn.Sequential(nn.Linear(width, config.residual), nn.ReLU(), nn.Dropout(config.dropout),
                                 nn.Linear(config.residual, width))
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, features); returns (B, 2) logits (real, fake)."""
        _, final = self.gru(x, self.initial.expand(-1, x.shape[0], -1).contiguous())
        states = final.permute(1, 0, 2).flatten(1)  # (B, layers * 2 * hidden), layer by layer, forward first
        states = self.dropout(states)
        return self.head(self.dropout(states + self.mlp(states)))


class LRNet(nn.Module):
    """``g1`` on landmark positions, ``g2`` on their frame-to-frame differences; see the module doc."""

    def __init__(self, config: LRNetConfig):
        super().__init__()
        self.config = config
        self.g1 = GRUBranch(config)
        self.g2 = GRUBranch(config)
        #: Applied by the kernel to this model's video scores; a checkpoint's "calibration" entry sets it.
        self.calibration = Calibration()
        #: How frames become this model's input; a checkpoint's "landmark_spec" entry sets it.
        self.spec = LandmarkSpec()

    def branch_logits(self, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``blocks``: (B, block, features) landmark positions; returns g1's two-class logits on them
        and g2's on their frame-to-frame differences, each (B, 2)."""
        if blocks.ndim != 3 or blocks.shape[1:] != (self.config.block, self.config.features):
            raise ValueError(f"LRNet reads blocks of shape (B, {self.config.block}, {self.config.features}), "
                             f"got {tuple(blocks.shape)}")
        return self.g1(blocks), self.g2(blocks[:, 1:] - blocks[:, :-1])

    def branch_probs(self, blocks: torch.Tensor) -> torch.Tensor:
        """``blocks``: (B, block, features) landmark positions; returns (B, 2): g1's and g2's fake
        probabilities."""
        return torch.stack([logits.softmax(1)[:, 1] for logits in self.branch_logits(blocks)], dim=1)

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        """``blocks``: (B, block, features); returns (B,) block fake probabilities (mean of g1's and g2's)."""
        return self.branch_probs(blocks).mean(1)

    def blocks(self, sequence: np.ndarray) -> torch.Tensor:
        """A (T, features) landmark sequence cut into ``T // block`` consecutive, non-overlapping
        blocks from its first frame: (n, block, features) float32 (n = 0 for a sequence shorter
        than one block)."""
        sequence = np.asarray(sequence, dtype=np.float32)
        if sequence.ndim != 2 or sequence.shape[1] != self.config.features:
            raise ValueError(f"a landmark sequence is (T, {self.config.features}), got {sequence.shape}")
        count = len(sequence) // self.config.block
        return torch.from_numpy(sequence[: count * self.config.block].reshape(count, self.config.block, self.config.features).copy())

