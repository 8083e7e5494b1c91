"""Where jobs run: the interface between the run loop and its workers.

A source takes chunks of jobs from the dispatcher and reports what comes
back. ``ProcessSource`` runs them in worker processes behind the shared-memory
ring; ``ExecutorSource`` runs them through any ``concurrent.futures.Executor``
(threads, a process pool, Dask); ``FutureSource`` collects futures that the
caller submitted itself. Every method runs in the collector thread.
"""

from __future__ import annotations

import abc
from typing import Protocol

from syncagg.dispatcher import Dispatcher
from syncagg.records import JobResult
from syncagg.transport import ResultBatch

__all__ = ["Sink", "Source"]


class Sink(Protocol):
    """The receiver of a source's results: the run loop."""

    def add_batch(self, slot: int, batch: ResultBatch) -> None:
        """Collect results of consecutive jobs of one slot, in the order they were sent."""

    def add_failures(self, failures: list[JobResult]) -> None:
        """Record jobs that failed without a result from the user's function."""


class Source(abc.ABC):
    """Runs chunks of jobs and reports their results."""

    slots: int

    @abc.abstractmethod
    def dispatch(self, dispatcher: Dispatcher, sink: Sink) -> None:
        """Send every slot with room its next chunk; reads inputs, which may block."""

    @abc.abstractmethod
    def poll(self, timeout: float, dispatcher: Dispatcher, sink: Sink) -> None:
        """Wait up to ``timeout`` seconds and report what arrived."""

    def lend_views(self) -> None:
        """Let large buffers in results be views of shared memory, for a collector that drops each value.

        Sources without shared memory ignore it.
        """
        return None

    @abc.abstractmethod
    def terminate(self) -> None:
        """Stop running jobs at once; ``close`` still follows."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every process, thread and segment of the source; idempotent."""
