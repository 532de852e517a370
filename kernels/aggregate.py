"""Frame probabilities -> one video probability.

A strategy turns the probabilities of one face track's frames into one score; the video's score
is then the mean of its tracks' scores, or, for ``trackmax``, the score of its most fake track
(a video with one swapped face among two people must not be averaged away).
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def mean(probs: np.ndarray) -> float:
    """Plain mean."""
    return float(np.mean(probs))


def confident(probs: np.ndarray, threshold: float = 0.8) -> float:
    """The DFDC winner's rule: if more than ``max(n / 2.5, 11)`` frames exceed ``threshold``, the
    mean of those; else if over 90% of frames are below ``1 - threshold``, the mean of those; else
    the mean of all."""
    probs = np.asarray(probs, dtype=np.float64)
    fakes = probs > threshold
    if fakes.sum() > max(len(probs) / 2.5, 11):
        return float(probs[fakes].mean())
    reals = probs < 1 - threshold
    if reals.sum() > 0.9 * len(probs):
        return float(probs[reals].mean())
    return float(probs.mean())


def sharpen(probs: np.ndarray, power: float = 0.65) -> float:
    """NTech's rule: push each probability away from 0.5 (``0.5 ± |p - 0.5| ** power``, clipped to
    [0.01, 0.99]) and average with weights ``|p - 0.5|``, so frames the model is unsure of (profile,
    blur) count little."""
    delta = np.asarray(probs, dtype=np.float64) - 0.5
    sharpened = np.clip(0.5 + np.sign(delta) * np.abs(delta) ** power, 0.01, 0.99)
    weights = np.abs(delta) + 1e-4
    return float((sharpened * weights).sum() / weights.sum())


def logitmean(probs: np.ndarray) -> float:
    """Polimi's rule: the sigmoid of the mean logit (a frame the model is sure of weighs more than
    in the plain mean)."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-15, 1 - 1e-15)
    return float(1 / (1 + np.exp(-np.mean(np.log(probs) - np.log1p(-probs)))))


#: Strategy name -> (score of one track's frames, how track scores combine into the video's).
STRATEGIES: dict[str, tuple[Callable[[np.ndarray], float], Callable[[np.ndarray], float]]] = {
    "mean": (mean, np.mean),
    "confident": (confident, np.mean),
    "sharpen": (sharpen, np.mean),
    "trackmax": (mean, np.max),
    "logitmean": (logitmean, np.mean),
}


def aggregate(probs, tracks, strategy: str = "confident") -> float:
    """Video score from frame ``probs`` and their face ``tracks`` (same length) by ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    probs, tracks = np.asarray(probs, dtype=np.float64), np.asarray(tracks)
    if probs.size == 0 or probs.shape != tracks.shape:
        raise ValueError(f"need one track id per probability and at least one, got {probs.shape} and {tracks.shape}")
    per_track, combine = STRATEGIES[strategy]
    return float(combine([per_track(probs[tracks == t]) for t in np.unique(tracks)]))
