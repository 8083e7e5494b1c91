"""Stopping runs that are still going when the interpreter exits.

A run in a daemon thread is still going when the main thread ends.
multiprocessing's exit handler then sends SIGTERM to the workers, which
ignore it, and waits for them forever. The handler in this module is
registered after that one, so it runs first: it stops every open run, which
kills its workers and writes a last checkpoint, and waits for the run to
return.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Iterator

__all__ = ["stopped_at_exit"]

logger = logging.getLogger("syncagg.aggregator")

# How long the exit handler waits for each stopped run to return.
_WAIT_SECONDS = 30.0

# id of the run's "returned" event -> (the event that stops the run, that event,
# the event set when the interpreter's exit stopped the run).
_OPEN: dict[int, tuple[threading.Event, threading.Event, threading.Event]] = {}
_lock = threading.Lock()
_registered = False


@contextlib.contextmanager
def stopped_at_exit(stop: threading.Event) -> Iterator[threading.Event]:
    """Register a run for the block's duration: at interpreter exit, ``stop`` is set and the block awaited.

    Yields an event that is set when the exit stopped the run, so the
    caller can end instead of returning a summary of part of the run.
    """
    global _registered
    returned = threading.Event()
    exiting = threading.Event()
    with _lock:
        if not _registered:
            atexit.register(_stop_open_runs)
            _registered = True
        _OPEN[id(returned)] = (stop, returned, exiting)
    try:
        yield exiting
    finally:
        with _lock:
            _OPEN.pop(id(returned), None)
        returned.set()


def _stop_open_runs() -> None:
    # Streams first: their run waits for the consumer at its last
    # checkpoint, which closing the stream ends.
    from syncagg.streaming import close_open_streams

    close_open_streams()
    with _lock:
        runs = list(_OPEN.values())
    if runs:
        logger.warning("the interpreter is exiting; stopping %d open run(s) after a last checkpoint", len(runs))
    for stop, _, exiting in runs:
        exiting.set()
        stop.set()
    for _, returned, _ in runs:
        if not returned.wait(_WAIT_SECONDS):
            logger.error("a run did not stop within %.0f s of the interpreter's exit", _WAIT_SECONDS)
