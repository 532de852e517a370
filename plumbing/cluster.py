"""One Ray session for a run: embedded on this machine, on 127.0.0.1 only, or joined to a cluster.

``--engine ray`` in ``kernels.predict`` and ``preprocessing.prepare`` opens it with
:func:`ray_session`. Ray is imported only then: the local engine does not need it installed.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from .cli import add_field_flag

ENGINES = ("local", "ray")
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Every machine of a cluster runs the tasks from the same checkout (shared storage, same path).
REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator:
    """Ray for the ``with`` block, stopped after it; yields the ``ray`` module.

    ``address`` None starts Ray embedded with ``num_cpus`` CPUs, its sockets on 127.0.0.1 (Ray
    otherwise binds the network interface), ignoring any cluster a crashed run left recorded in
    ``/tmp/ray``. ``auto`` or ``HOST:PORT`` joins a running cluster (``ray start --head``; one on
    127.0.0.1, as simulated in the tests, is joined on 127.0.0.1 too). A
    session this process already started (a test's, a notebook's) is used as it is and left running.
    """
    import ray

    if ray.is_initialized():
        yield ray
        return
    options = dict(logging_level=logging.WARNING, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    with contextlib.ExitStack() as stack:
        if address is None or address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
            stack.enter_context(_on_loopback())
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
        stack.callback(ray.shutdown)
        yield ray


@contextlib.contextmanager
def _on_loopback() -> Iterator[None]:
    """Ray binds a node to 127.0.0.1 only with its "clusters" switch off (on Linux it is on), which it
    reads from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at import: set both for this block (the
    processes Ray starts read the variable), so a later session may still join a real cluster."""
    from ray._private import ray_constants

    previous = os.environ.get(LOOPBACK_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_SWITCH], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        if previous[0] is None:
            os.environ.pop(LOOPBACK_SWITCH)
        else:
            os.environ[LOOPBACK_SWITCH] = previous[0]
        ray_constants.ENABLE_RAY_CLUSTER = previous[1]


def add_engine_arguments(parser, owner) -> None:
    """``--engine`` and ``--address``, defaulting to ``owner``'s fields of those names (a dataclass)."""
    add_field_flag(parser, owner, "engine", "local: processes on this machine; ray: Ray tasks, embedded or on "
                   "--address's cluster", choices=ENGINES)
    add_field_flag(parser, owner, "address", "with --engine ray: 'auto' or HOST:PORT of a running cluster; none "
                   "starts Ray embedded on this machine, on 127.0.0.1")
