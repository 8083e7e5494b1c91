"""Waiting for the collector thread while Ctrl-C and SIGTERM turn into a stop.

Ctrl-C raises ``KeyboardInterrupt`` in the caller's thread as usual; the wait
catches it, requests a stop from the run loop (no new jobs go out, jobs in flight get
``stop_timeout`` seconds to finish, then the workers stop and a last
checkpoint is written) and raises it again. A second Ctrl-C stops the jobs
in flight at once, and the last checkpoint is still written; a third stops
waiting for it. SIGTERM only sets a flag and requests a stop from the
loop, because an exception raised from a signal handler can surface at any
line of the caller's thread; once the loop has ended, the wait raises
``SystemExit(143)``, the status a process killed by SIGTERM reports to a shell.

Python runs signal handlers only in the main thread. ``Aggregator.run``
waits there, but ``Aggregator.stream`` starts its run loop in a thread of
its own, later. A ``Termination`` therefore keeps the handler separate
from the loop. The stream installs the handler in the caller's thread, and
attaches the loop once it exists.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol, TypeVar

__all__ = ["Termination", "handling_sigterm", "wait_for"]

logger = logging.getLogger("syncagg.aggregator")

_POLL_SECONDS = 0.1

_Result = TypeVar("_Result")


class _Stoppable(Protocol):
    ended: threading.Event
    error: BaseException | None

    def run(self) -> None: ...

    def request_stop(self, drain: bool = False) -> None: ...

    def terminate(self) -> None: ...


class Termination:
    """A SIGTERM handler that requests a stop of one run loop, and records that SIGTERM arrived.

    The first SIGTERM requests a stop after the jobs in flight, and the
    second stops those jobs at once; both end with a last checkpoint. A SIGTERM that arrives before a loop is
    attached stops that loop as soon as it is attached. Once the run is
    over, the handler passes SIGTERM on to the handler it replaced.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._loop: _Stoppable | None = None
        self._ended = False
        self._previous: Any = None
        self._installed = False
        # Reentrant, because a second SIGTERM can run the handler again
        # while the first call holds the lock.
        self._lock = threading.RLock()

    def install(self) -> None:
        """Install the SIGTERM handler, unless this is not the main thread, where Python cannot."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        self._installed = True

    def uninstall(self) -> None:
        """Mark the run as over and restore the previous handler. Idempotent.

        Outside the main thread, or when another handler replaced this one
        meanwhile, the handler stays in place and passes SIGTERM on.
        """
        self._ended = True
        if not self._installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, self._previous)
        self._installed = False

    def attach(self, loop: _Stoppable) -> None:
        """Stop ``loop`` on SIGTERM from now on, or at once if SIGTERM arrived already."""
        with self._lock:
            self._loop = loop
            requested = self.requested.is_set()
        if requested:
            loop.request_stop(drain=True)

    def end_run(self) -> None:
        """Mark the run as closed from any thread: a later SIGTERM goes to the previous handler."""
        with self._lock:
            self._loop = None
            self._ended = True

    def detach(self) -> None:
        """Stop sending SIGTERM to the loop, which has ended.

        A SIGTERM after this only sets ``requested`` until ``uninstall``, so
        the caller can finish closing the run and then exit with status 143.
        """
        with self._lock:
            self._loop = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            if self._ended:
                self._pass_on(signum)
                return
            repeated = self.requested.is_set()
            self.requested.set()
            loop = self._loop
        if loop is None:
            return
        if repeated:
            loop.terminate()
        else:
            loop.request_stop(drain=True)

    def _pass_on(self, signum: int) -> None:
        previous = self._previous if self._previous is not None else signal.SIG_DFL
        signal.signal(signal.SIGTERM, previous)
        self._installed = False
        signal.raise_signal(signum)


def wait_for(loop: _Stoppable, termination: Termination | None = None) -> None:
    """Run ``loop.run`` in the collector thread and wait for it to end.

    Raises ``KeyboardInterrupt`` on Ctrl-C and ``SystemExit(143)`` on SIGTERM,
    both after the loop has stopped. A second signal kills the workers
    instead of waiting for their jobs; the loop still writes a last
    checkpoint. A third Ctrl-C stops waiting for it. Without ``termination``, SIGTERM is
    handled while the loop runs if this is the main thread; with it, the
    caller has installed its handler.
    """
    owned = termination is None
    if termination is None:
        termination = Termination()
        termination.install()
    thread = threading.Thread(target=loop.run, name="syncagg-collector", daemon=True)
    termination.attach(loop)
    try:
        thread.start()
        try:
            _join(thread, loop.ended)
        except KeyboardInterrupt:
            _stop(loop, thread)
            raise
    finally:
        termination.detach()
        if owned:
            termination.uninstall()

    if termination.requested.is_set() and loop.error is None:
        logger.warning("stopped by SIGTERM after a last checkpoint")
        raise SystemExit(128 + signal.SIGTERM)
    # With an error, the caller raises it: the last checkpoint may have failed.


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
        return
    except KeyboardInterrupt:
        logger.warning("interrupted again; stopping the jobs in flight, then writing a last checkpoint")
        loop.terminate()
    try:
        _join(thread, loop.ended)
    except KeyboardInterrupt:
        # A third Ctrl-C stops waiting, so the checkpoint before this stop is the last.
        logger.warning("interrupted a third time; exiting without a last checkpoint")



def handling_sigterm(call: Callable[[Termination], _Result]) -> _Result:
    """Run ``call`` with a SIGTERM handler installed from the start to the end of a run.

    ``call`` passes the handler on to ``wait_for``. A SIGTERM while the run
    starts (counting the inputs, opening the outputs, starting the workers)
    stops the loop as soon as it exists, and one while the run closes lets
    it finish closing. Either way ``SystemExit(143)`` follows, as for a
    SIGTERM while the loop runs.
    """
    termination = Termination()
    termination.install()
    try:
        result = call(termination)
    finally:
        termination.uninstall()
    if termination.requested.is_set():
        logger.warning("stopped by SIGTERM after the run closed")
        raise SystemExit(128 + signal.SIGTERM)
    return result
