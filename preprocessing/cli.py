"""Command-line flags whose defaults live in the dataclass that owns them."""
from __future__ import annotations

import argparse
from typing import Any


def add_field_flag(parser: argparse.ArgumentParser, owner: Any, name: str, help: str, **kwargs) -> None:
    """Add ``--NAME`` (underscores as dashes) defaulting to ``owner.NAME`` (a dataclass instance), typed
    like that default unless ``type`` or ``choices`` is given, the default shown in the help."""
    default = getattr(owner, name)
    if "choices" not in kwargs and default is not None:
        kwargs.setdefault("type", type(default))
    parser.add_argument(f"--{name.replace('_', '-')}", default=default, help=f"{help} (default: %(default)s)", **kwargs)
