"""The CUDA queries faked or hidden, so tests run the CUDA branches on a CPU and CPU tests on a GPU machine.

:func:`fake_cuda` makes ``torch.cuda`` describe cards of one compute capability (a T4 by default)
without any being present: code that only *asks* about the device (precision policy, device checks,
worker plans) runs its CUDA branch; nothing may move a tensor there. :func:`hide_cuda` makes a GPU
machine look CPU-only to this process and to processes forked from it (tests that compare numbers
bit for bit against CPU runs).
"""
from __future__ import annotations

import torch

#: What the pinned torch build (CUDA 13) is compiled for: Turing and newer.
CUDA13_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")


def fake_cuda(monkeypatch, capability: tuple[int, int] = (7, 5), count: int = 1, name: str = "Tesla T4",
              archs: tuple[str, ...] = CUDA13_ARCHS) -> None:
    """``count`` CUDA cards of ``capability`` named ``name``, for a torch build compiled for ``archs``.
    ``is_bf16_supported`` answers as torch does: True on every card unless ``including_emulation=False``,
    then only from sm_80."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability[0] >= 8)


def hide_cuda(monkeypatch=None) -> None:
    """No CUDA device, as far as this process (and its forks) can tell; through ``monkeypatch`` when
    given (undone after the test), else for good (a child process)."""
    for name, value in (("is_available", lambda: False), ("device_count", lambda: 0)):
        if monkeypatch is not None:
            monkeypatch.setattr(torch.cuda, name, value)
        else:
            setattr(torch.cuda, name, value)
