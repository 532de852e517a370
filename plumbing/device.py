"""Which torch device a command computes on, and whether this torch build can run on it.

Every component (MTCNN, the classifiers, training) takes the one device the caller chose, or
:func:`default_device`. A CUDA card older than what the installed torch build was compiled for
(a P100, sm_60, under the pinned CUDA 13 wheels, built for sm_75 and newer) still reports
``torch.cuda.is_available()``, then fails on its first kernel; :func:`check_device` says so first,
in one line (what to install per card: ``docs/gpu.md``).
"""
from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device this machine or this torch build cannot compute on."""


def default_device() -> torch.device:
    """CUDA when present (checked by :func:`check_device`), else the CPU."""
    return check_device("cuda" if torch.cuda.is_available() else "cpu")


def cuda_arch(device: str | torch.device) -> tuple[int, int]:
    """The compute capability ``(major, minor)`` of a CUDA device (``(7, 5)``: a T4, sm_75)."""
    return tuple(torch.cuda.get_device_capability(torch.device(device)))


def _builds_for(arch: tuple[int, int]) -> bool:
    """Whether this torch build holds code a card of compute capability ``arch`` runs: machine code
    of its major version and an equal or lower minor (``sm_80`` runs on sm_86), or PTX
    (``compute_XY``) of an equal or lower capability."""
    listed = torch.cuda.get_arch_list()
    if not listed:  # a build that does not say: let CUDA decide
        return True
    for entry in listed:
        kind, _, digits = entry.partition("_")
        major, minor = int(digits[:-1]), int(digits[-1])
        if (kind == "sm" and major == arch[0] and minor <= arch[1]) or (kind == "compute" and (major, minor) <= arch):
            return True
    return False


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, after checking that it exists on this machine and that
    this torch build runs on it; raises :class:`DeviceError` naming the device and the cause."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise DeviceError(f"device {device}: this machine has no CUDA device (or torch {torch.__version__} "
                          "is a CPU build); use --device cpu")
    index = device.index if device.index is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {device}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    arch = cuda_arch(torch.device("cuda", index))
    if not _builds_for(arch):
        raise DeviceError(
            f"device cuda:{index} is a {torch.cuda.get_device_name(index)} (sm_{arch[0]}{arch[1]}), which torch "
            f"{torch.__version__} (built for {' '.join(torch.cuda.get_arch_list())}) cannot run: install a torch "
            "build for its CUDA (docs/gpu.md), or use --device cpu")
    return device


#: Detection processes that share one card at most: each holds a CUDA context and MTCNN's batch of
#: 1080p frames (about 0.34 GB); more would only queue for the same card while the cores idle.
PER_CARD = 4


def worker_devices(workers: int, device: str | torch.device | None = None) -> list[torch.device]:
    """The device each of ``workers`` detection processes (at least one) runs MTCNN on. A device
    given with an index, or the CPU, holds them all. Otherwise (none given, or ``cuda``) the rule is:
    on a machine with G CUDA cards, the first ``PER_CARD * G`` workers share the cards round robin
    (worker i on ``cuda:<i mod G>``) and the others detect on the CPU; without a card, all on the CPU."""
    count = max(workers, 1)
    if device is not None:
        device = check_device(device)
        if device.type == "cpu" or device.index is not None:
            return [device] * count
    elif not torch.cuda.is_available():
        return [torch.device("cpu")] * count
    cards = [check_device(torch.device("cuda", i)) for i in range(torch.cuda.device_count())]
    return [cards[i % len(cards)] if i < PER_CARD * len(cards) else torch.device("cpu") for i in range(count)]

#: Fragments of the messages torch raises when the device itself fails (older builds raise them as
#: plain ``RuntimeError``, and an exception pickled back from a worker process keeps only its text).
_DEVICE_FAILURES = ("CUDA out of memory", "CUDA error", "cuDNN error", "CUBLAS_STATUS", "NCCL error")


def device_failed(err: BaseException) -> bool:
    """Whether ``err`` is the device failing (out of memory, a CUDA, cuDNN or cuBLAS error) rather than
    one input: a run must stop on it, keeping what it finished, instead of giving every video after it
    the prior."""
    if isinstance(err, (torch.OutOfMemoryError, torch.AcceleratorError)):
        return True
    return any(fragment in str(err) for fragment in _DEVICE_FAILURES)
