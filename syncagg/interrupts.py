"""Waiting for the collector thread while Ctrl-C and SIGTERM turn into a stop.

Ctrl-C raises ``KeyboardInterrupt`` in the caller's thread as usual; the wait
catches it, asks the run loop to stop (workers stop, a last checkpoint is
written) and raises it again. SIGTERM only sets a flag and asks the loop to
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
    def run(self) -> None: ...

    def request_stop(self) -> None: ...

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
            _join(thread)
        except KeyboardInterrupt:
            _stop(loop, thread)
            raise

    if terminated.is_set():
        logger.warning("stopped by SIGTERM after a last checkpoint")
        raise SystemExit(128 + signal.SIGTERM)


def _join(thread: threading.Thread) -> None:
    # A join with a timeout lets Ctrl-C reach this thread between polls.
    while thread.is_alive():
        thread.join(_POLL_SECONDS)


def _stop(loop: _Stoppable, thread: threading.Thread) -> None:
    logger.warning("interrupted; stopping the workers and writing a last checkpoint")
    loop.request_stop()
    try:
        _join(thread)
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
        loop.request_stop()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
