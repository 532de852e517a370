"""A stacked ensemble: one logistic regression on the member models' video logits and on whether
each abstained. ``python -m kernels.calibrate --stack`` fits it out of fold; the kernel reads it.

For one video, member m gives ``z_m = logit(p_m)`` and ``a_m = 0``, or, where it abstained (a sequence
model without a block), ``z_m = 0`` and ``a_m = 1``; the video's fake probability is

    sigmoid(intercept + sum over m of (logit_m * z_m + abstained_m * a_m))

``p_m`` is the member's video score exactly as the kernel writes it in ``score_<m>`` of its detail file
(:data:`SCORE`): its frame -> video rule, then its checkpoint's calibration, kept 1e-6 from 0 and 1.
A calibration is affine in the logit, which the regression absorbs, so the fit is the same as on the
raw scores (up to the mild L2), and the detail file means the same with and without a stacking file.

The file (JSON) holds ``members`` (each: ``name``, the kernel's name for it: its checkpoint's file
stem; ``checkpoint``, its file name, beside the stacking file; ``sha256`` of that file; ``strategy``,
the frame -> video rule of the scores it was fitted on, None where the kernel's own; ``score``;
``logit`` and ``abstained``, its coefficients), ``intercept`` and ``report`` (how it was fitted).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from plumbing.fileio import write_json
from plumbing.strict import strict_fields

from .calibration import logit

#: What each member's score is: the kernel's ``score_<model>`` (the model's own calibration applied).
SCORE = "calibrated"


class StackingError(ValueError):
    """A stacking file that cannot be read or does not match the models; the message names the file."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise StackingError(f"{what} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Member:
    """One model of the stack and its two coefficients."""

    name: str
    checkpoint: str
    sha256: str
    logit: float
    abstained: float
    strategy: str | None = None
    score: str = SCORE

    def __post_init__(self):
        for key in ("name", "checkpoint"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise StackingError(f"member {self.name!r}: {key} must be a non-empty string")
        if not isinstance(self.sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise StackingError(f"member {self.name!r}: sha256 must be 64 hex digits, got {self.sha256!r}")
        if self.score != SCORE:
            raise StackingError(f"member {self.name!r}: score must be {SCORE!r}, got {self.score!r}")
        if self.strategy is not None and not isinstance(self.strategy, str):
            raise StackingError(f"member {self.name!r}: strategy must be a string or null")
        for key in ("logit", "abstained"):
            object.__setattr__(self, key, _number(getattr(self, key), f"member {self.name!r}: {key}"))


def features(probs) -> np.ndarray:
    """The regression's inputs of ``probs`` (videos x members, NaN where a member abstained):
    each member's logit (0 where it abstained), then each member's abstention (0 or 1)."""
    probs = np.asarray(probs, dtype=np.float64)
    abstained = np.isnan(probs)
    return np.hstack([np.where(abstained, 0.0, logit(np.where(abstained, 0.5, probs))), abstained.astype(np.float64)])


@dataclass(frozen=True)
class Stacking:
    """The members, in order, the intercept and the fit's report."""

    members: tuple[Member, ...]
    intercept: float
    report: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        names = [m.name for m in self.members]
        if not names or len(set(names)) < len(names):
            raise StackingError(f"members must be one or more, with distinct names; got {names}")
        object.__setattr__(self, "intercept", _number(self.intercept, "intercept"))

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def predict(self, probs) -> np.ndarray:
        """Fake probabilities of ``probs`` (videos x members, in :attr:`names` order, NaN: abstained)."""
        coefficients = np.array([m.logit for m in self.members] + [m.abstained for m in self.members])
        return expit(features(probs) @ coefficients + self.intercept)

    def __call__(self, scores: dict[str, float]) -> float:
        """One video's fake probability from its members' scores by name; a member absent abstained."""
        return float(self.predict([[scores.get(name, np.nan) for name in self.names]])[0])

    def to_dict(self) -> dict[str, Any]:
        return {"members": [dataclasses.asdict(m) for m in self.members], "intercept": self.intercept,
                "report": self.report}

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Stacking":
        """Read and validate ``path`` strictly; anything wrong is a :class:`StackingError` naming it."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise StackingError(f"{path}: not a readable stacking file ({err})") from None
        try:
            if not isinstance(values, dict) or not isinstance(values.get("members"), list):
                raise StackingError("not a JSON object with a list of members")
            strict_fields(cls, values, "stacking file", StackingError)
            members = []
            for i, member in enumerate(values["members"]):
                if not isinstance(member, dict):
                    raise StackingError(f"member {i} is not a JSON object")
                members.append(Member(**strict_fields(Member, member, f"member {i}", StackingError)))
            return cls(tuple(members), values.get("intercept"), values.get("report") or {})
        except (StackingError, TypeError) as err:  # TypeError: a required key missing
            raise StackingError(f"{path}: {err}") from None

    def checkpoints(self, path: str | Path) -> list[Path]:
        """The members' checkpoints, beside the stacking file ``path``; one missing is refused."""
        paths = [Path(path).parent / m.checkpoint for m in self.members]
        for member, checkpoint in zip(self.members, paths):
            if not checkpoint.is_file():
                raise StackingError(f"{path}: member {member.name!r}: its checkpoint {checkpoint} is missing")
        return paths

    def check(self, path: str | Path, digests: dict[str, str]) -> None:
        """Refuse models (``digests``: sha256 by the kernel's name) that are not exactly the members:
        one missing, one more, or one whose file changed since the fit (retrained, recalibrated)."""
        for member in self.members:
            if member.name not in digests:
                raise StackingError(f"{path}: member {member.name!r} is not among the models given "
                                    f"({sorted(digests)})")
            if digests[member.name] != member.sha256:
                raise StackingError(f"{path}: member {member.name!r}: its checkpoint's sha256 is "
                                    f"{digests[member.name][:12]}..., the stack was fitted on {member.sha256[:12]}... "
                                    "(retrained or recalibrated? fit the stack again)")
        extra = sorted(set(digests) - set(self.names))
        if extra:
            raise StackingError(f"{path}: model(s) {extra} are not members of the stack ({self.names})")
