"""What the commands share: flags whose defaults live in the dataclass that owns them, and a clean
stop on SIGTERM."""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
from typing import Any, Iterator

log = logging.getLogger(__name__)


def add_field_flag(parser: argparse.ArgumentParser, owner: Any, name: str, help: str, **kwargs) -> None:
    """Add ``--NAME`` (underscores as dashes) defaulting to ``owner.NAME`` (a dataclass instance), typed
    like that default unless ``type`` or ``choices`` is given, the default shown in the help."""
    default = getattr(owner, name)
    if "choices" not in kwargs and default is not None:
        kwargs.setdefault("type", type(default))
    parser.add_argument(f"--{name.replace('_', '-')}", default=default, help=f"{help} (default: %(default)s)", **kwargs)


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Within: SIGTERM (a scheduler's or ``kill``'s stop) raises ``SystemExit(143)`` in the main
    thread, so ``with`` blocks close on the way out and worker processes are stopped, not orphaned
    (a spawned worker never notices its parent's death); the previous handler is restored after.
    Elsewhere than the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        log.warning("SIGTERM: stopping; what is finished is kept, and the same command resumes")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
