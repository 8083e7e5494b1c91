"""Waiting for the collector thread while Ctrl-C and SIGTERM turn into a stop.

Ctrl-C raises ``KeyboardInterrupt`` in the caller's thread as usual; the wait
catches it, requests a stop from the run loop (no new jobs go out, jobs in flight get
``stop_timeout`` seconds to finish, then the workers stop and a last
checkpoint is written) and raises it again. SIGTERM only sets a flag and asks the loop to
stop, because an exception raised from a signal handler can surface at any
line of the caller's thread; once the loop has ended, the wait raises
``SystemExit(143)``, the status a process killed by SIGTERM reports to a shell.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Protocol

__all__ = ["wait_for"]

logger = logging.getLogger("syncagg.aggregator")

_POLL_SECONDS = 0.1


class _Stoppable(Protocol):
    ended: threading.Event

    def run(self) -> None: ...

    def request_stop(self, drain: bool = False) -> None: ...

    def terminate(self) -> None: ...


def wait_for(loop: _Stoppable) -> None:
    """Run ``loop.run`` in the collector thread and wait for it to end.

    Raises ``KeyboardInterrupt`` on Ctrl-C and ``SystemExit(143)`` on SIGTERM,
    both after the loop has stopped. A second signal stops waiting for a
    checkpoint and kills the workers.
    """
    thread = threading.Thread(target=loop.run, name="syncagg-collector", daemon=True)
    terminated = threading.Event()
    with _sigterm_stops(loop, terminated):
        thread.start()
        try:
            _join(thread, loop.ended)
        except KeyboardInterrupt:
            _stop(loop, thread)
            raise

    if terminated.is_set():
        logger.warning("stopped by SIGTERM after a last checkpoint")
        raise SystemExit(128 + signal.SIGTERM)


def _join(thread: threading.Thread, ended: threading.Event) -> None:
    # Waits on an event, not on Thread.join: in CPython 3.11 a join that
    # Ctrl-C interrupts can mark the still-running thread as stopped
    # (CPython issue gh-90882), and the teardown would then race the loop.
    while not ended.wait(_POLL_SECONDS):
        pass
    thread.join()


def _stop(loop: _Stoppable, thread: threading.Thread) -> None:
    logger.warning("interrupted; letting jobs in flight finish, then writing a last checkpoint")
    loop.request_stop(drain=True)
    try:
        _join(thread, loop.ended)
    except KeyboardInterrupt:
        # A second Ctrl-C stops waiting for the collector thread.
        loop.terminate()


@contextlib.contextmanager
def _sigterm_stops(loop: _Stoppable, terminated: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if terminated.is_set():
            loop.terminate()
            return
        terminated.set()
        loop.request_stop(drain=True)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
