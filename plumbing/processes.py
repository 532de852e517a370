"""Where worker processes start from: multiprocessing's fork server, so a worker starts in
milliseconds instead of importing torch again."""
from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import sys
from multiprocessing.context import BaseContext
from typing import Sequence


def worker_context(preload: Sequence[str] = ()) -> BaseContext:
    """The fork server where the platform has one (Linux), else spawn.

    The fork server is a fresh interpreter that imports the ``preload`` modules once, when it
    starts (the first worker, or :func:`start_early`), and forks every worker from there. Forked
    from a process that never ran torch's thread pools or touched CUDA, a worker is as safe as a
    spawned one, but finds torch, OpenCV and MTCNN's code already imported (seconds saved per
    worker). A server already running keeps what it preloaded.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if preload:
        context.set_forkserver_preload(list(preload))
    return context


def start_early(preload: Sequence[str]) -> None:
    """Start the fork server now, importing ``preload`` (where there is one): called first thing by a
    command, the server's imports run beside the command's own (on another core) rather than after
    them, when the command starts its workers."""
    if worker_context(preload).get_start_method() == "forkserver":
        # a worker runs the command's module again as __mp_main__ over the server's import of it:
        # harmless, but runpy would say so in every worker (the server passes -W flags on)
        sys.warnoptions.extend(f"ignore:'{module}' found in sys.modules:RuntimeWarning" for module in preload)
        multiprocessing.forkserver.ensure_running()
