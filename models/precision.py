"""How a model computes: the precision names every command accepts and the policy that resolves them.

``auto`` on a CUDA card is :func:`auto_precision`, from the card's real capability (training through
:meth:`Precision.resolve`, the kernel through ``kernels.ensemble``): bf16 on sm_80 and newer (Ampere,
Hopper: native bf16, no gradient scaler), fp16 with a gradient scaler on sm_70 / sm_75 (V100, T4:
tensor cores for fp16 only; bf16 there is emulated and has no cuDNN convolutions), fp32 below sm_70
(P100 and older: no tensor cores). On the CPU ``auto`` is fp32 for training; the kernel probes
bf16 per model there.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from plumbing.device import check_device, cuda_arch
from plumbing.strict import ConfigError


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def auto_precision(device: str | torch.device) -> str:
    """What ``auto`` resolves to on ``device`` (see the module doc): on CUDA, by the compute capability
    and ``torch.cuda.is_bf16_supported(including_emulation=False)``; fp32 elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return "fp32"
    major, _ = cuda_arch(device)
    if major >= 8 and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16"
    return "fp16" if major >= 7 else "fp32"


@dataclass(frozen=True)
class Precision:
    """How a model computes on ``device``: autocast to ``dtype`` (None = plain fp32) and whether images
    and weights use the ``channels_last`` memory format."""

    device: torch.device
    dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def resolve(cls, name: str, device: str | torch.device, channels_last: bool = False) -> "Precision":
        """``name`` is one of :data:`PRECISIONS`; ``auto`` is :func:`auto_precision` (on the CPU: fp32;
        ask for ``bf16`` there explicitly where it is faster). ``device`` is checked first
        (:func:`plumbing.device.check_device`)."""
        device = check_device(device)
        if name not in PRECISIONS:
            raise ConfigError(f"precision {name!r}: expected one of {PRECISIONS}")
        if name == "auto":
            name = auto_precision(device)
        if name == "fp16" and device.type != "cuda":
            raise ConfigError(f"precision fp16 needs CUDA (device is {device}); use bf16 or fp32 on the CPU")
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
        """Move a model to the device, in the chosen memory format. On CUDA this also turns on
        ``cudnn.benchmark`` (cuDNN times its convolution algorithms once per input shape and keeps the
        fastest): every caller (training, pretraining, cross-validation's scoring) feeds batches of one
        shape, so the timing pays once; the kernel, whose batches change size per video, does not call it."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def scaler(self, state: dict | None = None) -> torch.amp.GradScaler:
        """A gradient scaler, active for fp16 only (bf16 and fp32 need none), continuing from a saved
        scaler's ``state`` when both are fp16. A resume across precisions converts cleanly: a state
        saved by a disabled scaler (bf16 or fp32) is empty, so fp16 starts from a fresh scale; an fp16
        state resumed in bf16 or fp32 is dropped with the scaler it no longer needs."""
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype is torch.float16)
        if state and scaler.is_enabled():
            scaler.load_state_dict(state)
        return scaler
