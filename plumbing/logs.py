"""Logging set-up shared by the command-line tools."""
from __future__ import annotations

import logging


def configure_logging(verbose: bool = False) -> None:
    """Log to stderr as ``LEVEL name: message``; ``verbose`` adds debug messages.

    Does nothing when the root logger already has handlers (a notebook's or a test runner's).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
