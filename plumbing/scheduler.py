"""One bounded in-flight scheduler for every engine: keep at most ``limit`` jobs running, hand back
each as it finishes, stop at a deadline, give up on a job that runs too long, and cancel what is
still running when the caller stops.

The engines differ only in their :class:`Jobs`, which says how a job is submitted, waited on, read and
stopped: :class:`PoolJobs` for a ``concurrent.futures`` executor, :class:`RayJobs` for Ray tasks, or
one of the caller's own (``kernels.pipeline``'s worker processes).
"""
from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator, Protocol

log = logging.getLogger(__name__)


@dataclass
class Done:
    """A job's end: its ``item`` and its ``value``, or the ``error`` it raised, or ``timed_out``
    (given up after the scheduler's ``timeout`` seconds)."""

    item: Any
    value: Any = None
    error: Exception | None = None
    timed_out: bool = False


class Jobs(Protocol):
    """How an engine runs jobs; a handle is whatever :meth:`submit` returns (hashable)."""

    def submit(self, item: Any) -> Hashable:
        """Start the job for ``item``."""

    def wait(self, handles: list, timeout: float | None) -> list:
        """The handles among ``handles`` that have finished, after at most ``timeout`` seconds (None:
        until one has); possibly none."""

    def result(self, handle: Hashable) -> Any:
        """A finished job's value; raises what the job raised."""

    def cancel(self, handles: list) -> bool:
        """Stop these jobs (run too long); True when that stopped every other job in flight too (a pool
        restarted), which the scheduler then submits again."""

    def stop(self, handles: list) -> None:
        """The run ends with these jobs in flight: stop them."""


def in_flight(items: Iterable, jobs: Jobs, limit: int, *, remaining: Callable[[], float] | None = None,
              timeout: float | None = None, poll: float = 0.5,
              late: str = "deadline reached with %d job(s) in flight: cancelled") -> Iterator[Done]:
    """Run a job per item of ``items`` with at most ``limit`` in flight, yielding each :class:`Done` as
    it finishes (not in order).

    ``items`` is drawn from only when a slot is free, so a lazy iterable decides each job when it is
    submitted (and ends the run by ending). ``remaining()``: seconds left before the deadline; when
    none are left with jobs in flight, ``late`` (a ``%d`` message: how many) is logged and the run
    stops. ``timeout``: seconds after which a job still running is cancelled and yielded as timed out.
    Jobs still in flight when the run stops (the deadline, an error, the caller closing the iterator)
    are stopped (:meth:`Jobs.stop`). ``poll``: the longest wait between checks when there is a
    deadline or a timeout.
    """
    items = iter(items)
    pending: dict[Hashable, tuple[Any, float]] = {}  # handle -> (item, submitted at)
    wait = poll if remaining is not None or timeout is not None else None
    try:
        while True:
            for item in items if len(pending) < limit else ():
                pending[jobs.submit(item)] = (item, time.monotonic())
                if len(pending) >= limit:
                    break
            if not pending:
                return
            if remaining is not None and remaining() <= 0:
                log.warning(late, len(pending))
                return
            for handle in jobs.wait(list(pending), wait):
                item, _ = pending.pop(handle)
                try:
                    done = Done(item, jobs.result(handle))
                except Exception as err:  # the job's own failure: the caller decides what it means
                    done = Done(item, error=err)
                yield done
            now = time.monotonic()
            stuck = [h for h, (_, start) in pending.items() if timeout is not None and now - start > timeout]
            if stuck:
                restarted = jobs.cancel(stuck)
                for handle in stuck:
                    yield Done(pending.pop(handle)[0], timed_out=True)
                if restarted:
                    for handle, (item, _) in list(pending.items()):
                        del pending[handle]
                        pending[jobs.submit(item)] = (item, time.monotonic())
    finally:
        if pending:
            jobs.stop(list(pending))


class PoolJobs:
    """Jobs ``work(item)`` on a ``concurrent.futures`` executor (a process pool)."""

    def __init__(self, executor: concurrent.futures.Executor, work: Callable[[Any], Any]):
        self.executor, self.work = executor, work

    def submit(self, item: Any) -> concurrent.futures.Future:
        return self.executor.submit(self.work, item)

    def wait(self, handles: list, timeout: float | None) -> list:
        return list(concurrent.futures.wait(handles, timeout, concurrent.futures.FIRST_COMPLETED).done)

    def result(self, handle: concurrent.futures.Future) -> Any:
        return handle.result()

    def cancel(self, handles: list) -> bool:
        for future in handles:
            future.cancel()
        return False

    def stop(self, handles: list) -> None:
        self.cancel(handles)


class RayJobs:
    """Jobs on Ray: ``submit(item)`` returns the object ref of the job's result, or ``(result ref,
    first task's ref)`` for a job of two tasks, where cancelling the first stops the job."""

    def __init__(self, ray, submit: Callable[[Any], Any]):
        self.ray, self._submit = ray, submit
        self._first: dict = {}  # result ref -> the ref to cancel

    def submit(self, item: Any):
        refs = self._submit(item)
        result, first = refs if isinstance(refs, tuple) else (refs, refs)
        self._first[result] = first
        return result

    def wait(self, handles: list, timeout: float | None) -> list:
        return self.ray.wait(handles, num_returns=1, timeout=timeout)[0]

    def result(self, handle) -> Any:
        self._first.pop(handle, None)
        return self.ray.get(handle)

    def cancel(self, handles: list) -> bool:
        for handle in handles:
            self.ray.cancel(self._first.pop(handle, handle), force=True)
        return False

    def stop(self, handles: list) -> None:
        self.cancel(handles)
