"""The bounded in-flight scheduler every engine shares, on a real thread pool: the bound, the lazy
draw of items, the deadline, the per-job timeout and the stop."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from plumbing.scheduler import PoolJobs, in_flight


class Counting:
    """A job that sleeps ``item`` seconds and records how many jobs ran at once."""

    def __init__(self):
        self.lock, self.running, self.most = threading.Lock(), 0, 0

    def __call__(self, seconds: float) -> float:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(seconds)
        with self.lock:
            self.running -= 1
        return seconds


def test_at_most_limit_jobs_run_and_each_comes_back_once():
    work = Counting()
    with ThreadPoolExecutor(8) as pool:
        done = list(in_flight([0.02] * 10, PoolJobs(pool, work), 3))
    assert len(done) == 10 and all(d.value == 0.02 and d.error is None for d in done)
    assert work.most == 3


def test_items_are_drawn_when_a_slot_frees_and_an_error_is_handed_back():
    drawn = []

    def items():
        for i in range(4):
            drawn.append(i)
            yield i

    def work(i):
        if i == 2:
            raise ValueError("bad item")
        return i * 10

    with ThreadPoolExecutor(2) as pool:
        finished = in_flight(items(), PoolJobs(pool, work), 2)
        first = next(finished)
        assert len(drawn) == 2  # only as many as the bound, before anything finished
        done = [first, *finished]
    assert sorted(d.value for d in done if d.error is None) == [0, 10, 30]
    assert [str(d.error) for d in done if d.error is not None] == ["bad item"]


def test_the_deadline_stops_the_run_and_cancels_what_has_not_started(caplog):
    start = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        jobs = PoolJobs(pool, Counting())
        done = list(in_flight([0.05, 0.05, 1.0, 1.0, 1.0], jobs, 3, remaining=lambda: 0.3 - (time.monotonic() - start),
                              poll=0.01, late="deadline with %d in flight"))
    assert [d.value for d in done] == [0.05, 0.05]
    assert "deadline with 3 in flight" in caplog.text
    assert time.monotonic() - start < 1.5  # the 1 s jobs queued behind the running one never ran


def test_a_job_past_its_timeout_comes_back_timed_out():
    with ThreadPoolExecutor(2) as pool:
        done = list(in_flight([0.01, 0.5], PoolJobs(pool, time.sleep), 2, timeout=0.1, poll=0.01))
    assert {d.item: d.timed_out for d in done} == {0.01: False, 0.5: True}
