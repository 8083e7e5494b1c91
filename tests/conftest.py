"""Checks that run around every test: no leaked segments, processes, threads or descriptors."""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psutil
import pytest

from syncagg.segments import SHM_DIR

# Long-lived helpers that multiprocessing starts once per interpreter.
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


@dataclass(frozen=True)
class Lasting:
    """Child processes and descriptors that a module-scoped fixture keeps between tests.

    Both are callables, not sets, because they change while the fixture is
    active: a Dask nanny restarts a lost worker under a new pid, and Dask's
    connection pools open sockets as they grow.
    """

    pids: Callable[[], set[int]]
    descriptors: Callable[[], set[int]]


_LASTING: list[Lasting] = []


def _segments() -> set[str]:
    """Segments owned by this process, its children, or a process that is gone.

    Segments of other live processes belong to other test runs on the same
    machine and are not this test's business.
    """
    ours = {os.getpid()} | {child.pid for child in psutil.Process().children(recursive=True)}
    found = set()
    for name in os.listdir(SHM_DIR):
        match = re.match(r"syncagg-(\d+)-", name)
        if match is None:
            continue
        owner = int(match.group(1))
        if owner in ours or not psutil.pid_exists(owner):
            found.add(name)
    return found


def _children() -> list[psutil.Process]:
    lasting = set().union(*(item.pids() for item in _LASTING))
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            if child.status() == psutil.STATUS_ZOMBIE or any(h in command for h in _HELPERS):
                continue
            if child.pid in lasting:
                continue
        except psutil.NoSuchProcess:
            continue
        children.append(child)
    return children


def _noop() -> None:
    return None


@pytest.fixture(scope="session", autouse=True)
def _start_helpers() -> None:
    """Start the resource tracker and the fork server up front, so the fd counts stay still."""
    from multiprocessing import shared_memory

    segment = shared_memory.SharedMemory(create=True, size=16)
    segment.close()
    segment.unlink()
    process = multiprocessing.get_context("forkserver").Process(target=_noop)
    process.start()
    process.join()


def _descriptors() -> int:
    """Count this process's open descriptors, leaving out those of registered fixtures."""
    lasting = set().union(*(item.descriptors() for item in _LASTING))
    return psutil.Process().num_fds() - len(lasting)


@pytest.fixture(scope="session")
def lasting() -> list[Lasting]:
    """Return the registry of processes and descriptors that the leak check skips.

    A module-scoped fixture appends its ``Lasting`` after it starts them and
    removes it before it stops them.
    """
    return _LASTING


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a segment, a child process, a syncagg thread or a descriptor."""
    segments = _segments()
    descriptors = _descriptors()
    yield

    deadline = time.monotonic() + 5
    while _children() and time.monotonic() < deadline:
        time.sleep(0.05)
    leaked_children = [(c.pid, " ".join(c.cmdline())) for c in _children()]
    assert leaked_children == []

    threads = [t.name for t in threading.enumerate() if t.name.startswith("syncagg-")]
    assert threads == []

    assert _segments() - segments == set()
    assert _descriptors() == descriptors
