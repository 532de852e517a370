"""Preparation on Ray: a task per original and its fakes, on any machine of the cluster.

Each task prepares its original first, then the fakes cropped with its boxes (they read what it
wrote: ``--out`` must be storage every machine shares), with :func:`preprocessing.prepare_video.prepare_video`,
so the crops, masks and records are the local run's. A task whose worker or node dies is retried
(``RETRIES`` times) and redoes its videos from scratch; at most two tasks per CPU of the cluster are
in flight. The driver writes the tables, as in the local run.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import ray

from plumbing.cluster import ray_session
from plumbing.scheduler import RayJobs, in_flight

from .prepare_video import PrepareConfig, Task, prepare_video

RETRIES = 2


@ray.remote(num_cpus=1, max_retries=RETRIES, scheduling_strategy="SPREAD")
def _prepare_group(config: PrepareConfig, tasks: list[Task]) -> list[dict]:
    return [prepare_video(config, task) for task in tasks]


def groups(phases: list[list[Task]]) -> list[list[Task]]:
    """Each video of the first phase (originals and unpaired videos) with the fakes of the second
    phase that are cropped with its boxes; a fake whose original is not in the first phase (done
    earlier) is a group of its own."""
    detect, align = phases
    fakes: dict[str, list[Task]] = {}
    for task in align:
        fakes.setdefault(task.original, []).append(task)
    grouped = [[task, *fakes.pop(task.video, [])] for task in detect]
    return grouped + [[task] for tasks in fakes.values() for task in tasks]


def prepare_on_ray(config: PrepareConfig, phases: list[list[Task]]) -> Iterator[dict]:
    """The records of every task of ``phases`` (as for the local pool), a group at a time as they finish;
    embedded Ray gets ``config.workers`` CPUs, ``config.address`` joins a cluster instead."""
    config = dataclasses.replace(config, device="cpu")  # CPU tasks: Ray shows them no GPU
    with ray_session(config.address, num_cpus=max(config.workers, 1)) as session:
        in_flight_limit = 2 * max(int(session.cluster_resources().get("CPU", 1)), 1)
        jobs = RayJobs(session, lambda group: _prepare_group.remote(config, group))
        with contextlib.closing(in_flight(groups(phases), jobs, in_flight_limit)) as finished:
            for done in finished:
                if done.error is not None:
                    raise done.error
                yield from done.value
