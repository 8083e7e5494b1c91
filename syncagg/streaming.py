"""``Aggregator.stream``: results handed to the caller's loop as they arrive.

The run goes on in background threads: a stream thread that runs the
aggregator, and the usual collector thread. The collector hands each result
to a bounded ``Handoff``. When the consumer falls behind, the hand-off fills
up and the collector waits. The workers then wait on their full ring
regions, so memory stays bounded.

A checkpoint records only results that the consumer has taken: the
collector waits until the consumer has come back for the next result after
the last one it took. A result delivered after the last checkpoint is
delivered again after a resume, so delivery is at least once.

When the consumer stops early (``break``, an exception, ``close()``, or the
stream being garbage collected), the run stops without another checkpoint:
the workers are killed, partial outputs are removed (or kept for a resume
when there is a checkpoint), and ``close()`` returns once every thread and
process of the run has ended.

SIGTERM stops the run as it stops ``Aggregator.run``: no new jobs go out,
the jobs in flight get ``stop_timeout`` seconds to finish and reach the
consumer, a last checkpoint is written once the consumer has taken them,
and then ``next()`` raises ``SystemExit(143)``. A stream created in the
main thread installs the handler, and restores the previous one when the
stream ends. A second SIGTERM kills the workers at once.

NOTE: the stop completes only when the consumer comes back for the next
result. A consumer that never calls ``next()`` again keeps the process
alive, even after a second SIGTERM.
"""

from __future__ import annotations

import atexit
import collections
import logging
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType

from syncagg.interrupts import Termination
from syncagg.records import JobResult
from syncagg.summary import RunSummary
from syncagg.transport import estimate_size

__all__ = ["ConsumerGone", "Handoff", "ResultStream", "close_open_streams"]

logger = logging.getLogger("syncagg.streaming")

_POLL_SECONDS = 0.1


class ConsumerGone(Exception):
    """Raised in the collector thread when the stream's consumer has stopped."""


class Handoff:
    """A bounded queue of results from the collector thread to one consumer.

    The queue contains at most ``capacity`` results and, beyond the first,
    results of at most ``capacity_bytes`` estimated bytes in all. Besides
    the queue it tracks whether the consumer is still working on a result
    it took, which is what ``wait_consumed`` waits for. It ends with either
    the run's summary or its error.
    """

    def __init__(self, capacity: int, capacity_bytes: int = 64 * 1024 * 1024) -> None:
        self._capacity = capacity
        self._capacity_bytes = capacity_bytes
        self._bytes = 0
        self._items: collections.deque[tuple[JobResult, int]] = collections.deque()
        self._condition = threading.Condition()
        self._holding = False
        self._closed = False
        self._ended = False
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None

    def put(self, result: JobResult) -> None:
        """Add a result; wait while the queue is full. Raises ``ConsumerGone`` after ``close``."""
        size = estimate_size(result.value)
        with self._condition:
            while self._full(size) and not self._closed:
                self._condition.wait(_POLL_SECONDS)
            if self._closed:
                raise ConsumerGone("the consumer of the stream stopped")
            self._items.append((result, size))
            self._bytes += size
            self._condition.notify_all()

    def _full(self, size: int) -> bool:
        # One result always fits, however large, so none waits forever.
        if not self._items:
            return False
        return len(self._items) >= self._capacity or self._bytes + size > self._capacity_bytes

    def wait_consumed(self) -> None:
        """Wait until the queue is empty and the consumer came back for more.

        Raises ``ConsumerGone`` after ``close``.
        """
        with self._condition:
            while (self._items or self._holding) and not self._closed:
                self._condition.wait(_POLL_SECONDS)
            if self._closed:
                raise ConsumerGone("the consumer of the stream stopped")

    def get(self) -> JobResult | None:
        """Return the next result, or ``None`` once the run has ended and the queue is empty.

        Taking a result marks the previous one as consumed.
        """
        with self._condition:
            self._holding = False
            self._condition.notify_all()
            while not self._items and not self._ended and not self._closed:
                # A timeout keeps the wait short, so Ctrl-C reaches the main thread.
                self._condition.wait(_POLL_SECONDS)
            if not self._items:
                return None
            self._holding = True
            self._condition.notify_all()
            result, size = self._items.popleft()
            self._bytes -= size
            return result

    def end(self, summary: RunSummary | None, error: BaseException | None) -> None:
        """Record how the run ended; ``get`` returns ``None`` once the queue is empty."""
        with self._condition:
            self.summary = summary
            self.error = error
            self._ended = True
            self._condition.notify_all()

    def close(self) -> None:
        """Mark the consumer as gone: waiting producers raise ``ConsumerGone``."""
        with self._condition:
            self._closed = True
            self._items.clear()
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        """Whether the consumer is gone."""
        return self._closed


# Runs the aggregator in the stream thread: start(handoff, stop, termination).
Start = Callable[[Handoff, threading.Event, Termination], RunSummary]


class ResultStream(Iterator[JobResult]):
    """An iterator of ``JobResult`` objects as the run produces them.

    Iterate over it, or use it in a ``with`` block so that leaving the
    block stops the run. After the last result, ``summary`` is the
    ``RunSummary``. An error that stopped the run is raised from ``next()``
    once the results before it have been taken.

    Parameters
    ----------
    start : callable
        Runs the aggregator in the stream thread: ``start(handoff, stop,
        termination)`` returns the run's summary; the run ends early when
        ``stop`` is set, and attaches its loop to ``termination``.
    capacity : int
        Results that may wait for the consumer.
    capacity_bytes : int
        Estimated bytes of the results that may wait, beyond the first.
    """

    def __init__(self, start: Start, capacity: int, capacity_bytes: int = 64 * 1024 * 1024) -> None:
        self._handoff = Handoff(capacity, capacity_bytes)
        self._stop = threading.Event()
        self._closed = False
        self.summary: RunSummary | None = None
        self._termination = Termination()
        self._termination.install()
        # The thread references the hand-off and the event, never this object,
        # so a stream the caller drops is garbage collected and closes the run.
        self._thread = threading.Thread(
            target=_run,
            args=(start, self._handoff, self._stop, self._termination),
            name="syncagg-stream",
            daemon=True,
        )
        self._thread.start()
        _close_at_exit(self)

    def __iter__(self) -> ResultStream:
        return self

    def __next__(self) -> JobResult:
        if self._closed:
            raise StopIteration
        result = self._handoff.get()
        if result is not None:
            return result

        self._thread.join()
        self._closed = True
        self._termination.uninstall()
        if self._handoff.error is not None:
            raise self._handoff.error
        self.summary = self._handoff.summary
        if self._termination.requested.is_set():
            # SIGTERM arrived after the run loop ended, while the run closed.
            raise SystemExit(128 + signal.SIGTERM)
        raise StopIteration

    def close(self) -> None:
        """Stop the run if it is still going and wait until its threads and processes end.

        Idempotent. Results not yet taken are discarded; with a checkpoint,
        the jobs after the last checkpoint run again on the next call.
        """
        if self._closed and not self._thread.is_alive():
            return
        self._closed = True
        self._stop.set()
        self._handoff.close()
        self._thread.join()
        self._termination.uninstall()
        _OPEN.discard(self)

    def __enter__(self) -> ResultStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # An exception raised in a finalizer would only be printed, so log it.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing can receive it here
            logger.exception("closing a stream that was garbage collected failed")


# Streams not closed yet. A stream that a module-level name still refers to
# at interpreter exit is never collected, and multiprocessing's exit handler
# would then wait forever for its workers, which ignore the SIGTERM it sends.
_OPEN: weakref.WeakSet[ResultStream] = weakref.WeakSet()
_registered = False


def _close_at_exit(stream: ResultStream) -> None:
    global _registered
    _OPEN.add(stream)
    if not _registered:
        # Registered after multiprocessing's exit handler, so it runs before it.
        atexit.register(close_open_streams)
        _registered = True


def close_open_streams() -> None:
    """Close every stream that is still open; used at interpreter exit."""
    for stream in list(_OPEN):
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - the interpreter is exiting; log and go on
            logger.exception("closing an open stream at exit failed")


def _run(start: Start, handoff: Handoff, stop: threading.Event, termination: Termination) -> None:
    """Thread body: run the aggregator and record how it ended."""
    summary: RunSummary | None = None
    error: BaseException | None = None
    try:
        summary = start(handoff, stop, termination)
    except ConsumerGone:
        logger.debug("the consumer stopped the stream; the run stopped")
    except BaseException as exc:  # noqa: BLE001 - raised again in the consumer's thread
        error = exc
        if handoff.closed:
            logger.error("the run stopped after its stream was closed, with %s: %s", type(exc).__name__, exc)
    handoff.end(summary, error)
    # The run has closed: a SIGTERM from now on goes to the previous handler,
    # as after run() returns, even if the consumer never takes the end.
    termination.end_run()
