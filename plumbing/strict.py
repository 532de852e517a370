"""Settings that reject what they do not know: an unknown key is an error listing the valid ones."""
from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A config names an unknown key or an impossible value."""


def strict_fields(cls, values: dict[str, Any], where: str, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """Check ``values`` against the dataclass ``cls``: unknown keys raise ``error`` naming them and
    listing the valid ones (``where``: what the values are, in the message)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    return values
