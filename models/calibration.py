"""Calibration of a model's video scores for log-loss: one temperature and a bias on the logit.

A checkpoint may carry a :class:`Calibration` (``"calibration"`` entry); the kernel applies it to the
model's video score before the ensemble mean and the clipping. It is fitted on out-of-fold video
scores (``python -m kernels.calibrate``), minimising the log-loss with real and fake videos weighing
half each, so the class ratio of the data it was fitted on does not become a prior.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize

from plumbing.strict import ConfigError, strict_fields

#: Probabilities are kept this far from 0 and 1 before taking their logit.
_LIMIT = 1e-6
#: Bounds of log(1 / temperature) (a temperature from 0.05 to 20) and of the bias: a few dozen
#: separable videos must not make a model infinitely sure of itself.
_SHARPEN = (-np.log(20.0), np.log(20.0))
_BIAS = (-5.0, 5.0)


def logit(probs) -> np.ndarray:
    probs = np.clip(np.asarray(probs, dtype=np.float64), _LIMIT, 1 - _LIMIT)
    return np.log(probs) - np.log1p(-probs)


@dataclass(frozen=True)
class Calibration:
    """``p -> sigmoid(logit(p) / temperature + bias)``. ``strategy``: the frame -> video rule whose
    scores it was fitted on (None: unknown); the default is the identity."""

    temperature: float = 1.0
    bias: float = 0.0
    strategy: str | None = None

    def __post_init__(self):
        if not (np.isfinite(self.temperature) and self.temperature > 0 and np.isfinite(self.bias)):
            raise ConfigError(f"calibration {self}: temperature must be > 0 and bias finite")

    def __call__(self, probs):
        """Calibrated probabilities of ``probs`` (a float for a float)."""
        out = 1 / (1 + np.exp(-(logit(probs) / self.temperature + self.bias)))
        return float(out) if np.ndim(out) == 0 else out

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "Calibration":
        return cls(**strict_fields(cls, values or {}, "calibration"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fit(labels: Sequence[int], probs: Sequence[float], bias: bool = True, strategy: str | None = None) -> Calibration:
    """The temperature (and, with ``bias``, the bias) that minimise the log-loss of ``probs`` against
    0/1 ``labels``, real and fake weighing half each; never worse there than the identity, which is
    returned when both classes are not present."""
    labels = np.asarray(labels, int)
    z = logit(probs)
    if len(set(labels.tolist())) < 2:
        return Calibration(strategy=strategy)
    weights = np.where(labels == 1, 0.5 / (labels == 1).sum(), 0.5 / (labels == 0).sum())

    def loss(params: np.ndarray) -> float:
        # params: log(1 / temperature), bias; the weighted binary cross-entropy in the logit's terms
        scaled = z * np.exp(params[0]) + (params[1] if bias else 0.0)
        return float(np.sum(weights * np.logaddexp(0.0, np.where(labels == 1, -scaled, scaled))))

    # a descent from the identity (0, 0): it never ends at a higher loss than where it started
    result = minimize(loss, np.zeros(2), method="L-BFGS-B", bounds=[_SHARPEN, _BIAS if bias else (0.0, 0.0)])
    return Calibration(float(np.exp(-result.x[0])), float(result.x[1]) if bias else 0.0, strategy)
