"""How a model computes: the precision names every command accepts and the policy that resolves them.

Training resolves ``auto`` with :meth:`Precision.resolve` (bf16 on CUDA where supported); the kernel
resolves it per model in ``kernels.ensemble`` (fp16 on CUDA; on a CPU, bf16 where a probe shows it
faster and as accurate).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """How a model computes on ``device``: autocast to ``dtype`` (None = plain fp32) and whether images
    and weights use the ``channels_last`` memory format."""

    device: torch.device
    dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def resolve(cls, name: str, device: str | torch.device, channels_last: bool = False) -> "Precision":
        """``name`` is one of :data:`PRECISIONS`. ``auto`` means bf16 on CUDA devices that support it,
        fp16 on older ones, and fp32 on the CPU (ask for ``bf16`` there explicitly where it is faster)."""
        device = torch.device(device)
        if name not in PRECISIONS:
            raise ValueError(f"precision {name!r}: expected one of {PRECISIONS}")
        if name == "auto":
            if device.type == "cuda":
                name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                name = "fp32"
        if name == "fp16" and device.type != "cuda":
            raise ValueError(f"precision fp16 needs CUDA (device is {device}); use bf16 or fp32 on the CPU")
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
        return cls(device, dtype, channels_last)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """Move a batch of images to the device, in the chosen memory format."""
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def model(self, model: nn.Module) -> nn.Module:
        """Move a model to the device, in the chosen memory format."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, active for fp16 only (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype is torch.float16)
