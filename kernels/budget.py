"""The deadline for a whole folder, and how many frames the next video can afford under it."""
from __future__ import annotations

import math
import time
from typing import Callable


class Budget:
    """Seconds left before a deadline and a running estimate of what a video costs.

    A video of ``n`` frames is modelled as costing ``fixed + per_frame * n`` seconds of wall
    time, fitted by least squares on the videos finished so far (all cost put on frames until two
    different frame counts have been seen). ``reserve`` seconds are kept back for writing outputs.
    ``seconds=None`` means no deadline; ``start`` (a ``clock()`` reading) defaults to now.
    """

    def __init__(self, seconds: float | None, reserve: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 start: float | None = None):
        self.clock = clock
        self.start = clock() if start is None else start
        self.deadline = math.inf if seconds is None else self.start + seconds
        self.reserve = reserve
        self.observed: list[tuple[int, float]] = []

    def remaining(self) -> float:
        """Seconds until the deadline (``inf`` without one)."""
        return self.deadline - self.clock()

    def usable(self) -> float:
        """Seconds left for processing videos, after the reserve."""
        return self.remaining() - self.reserve

    def record(self, frames: int, seconds: float) -> None:
        """Note that a video of ``frames`` frames took ``seconds``."""
        self.observed.append((frames, seconds))

    def cost_model(self) -> tuple[float, float] | None:
        """``(fixed, per_frame)`` seconds, or None before any video finished."""
        if not self.observed:
            return None
        n = [float(f) for f, _ in self.observed]
        t = [s for _, s in self.observed]
        mean_n, mean_t = sum(n) / len(n), sum(t) / len(t)
        var_n = sum((x - mean_n) ** 2 for x in n)
        if var_n > 0:
            per_frame = max(sum((x - mean_n) * (y - mean_t) for x, y in zip(n, t)) / var_n, 0.0)
            fixed = max(mean_t - per_frame * mean_n, 0.0)
            return fixed, per_frame
        return 0.0, mean_t / max(mean_n, 1.0)

    def frames_for_next(self, videos_left: int, max_frames: int, min_frames: int) -> int:
        """Frames to read from the next video so the ``videos_left`` (this one included) fit in the
        usable time: ``max_frames`` while they fit, fewer down to ``min_frames`` when they do not,
        0 when no time is left at all (the video gets the prior)."""
        usable = self.usable()
        if usable <= 0:
            return 0
        model = self.cost_model()
        if model is None or math.isinf(usable):
            return max_frames
        fixed, per_frame = model
        share = usable / max(videos_left, 1)
        if per_frame <= 0:
            return max_frames
        affordable = math.floor((share - fixed) / per_frame)
        return int(min(max(affordable, min_frames), max_frames))
