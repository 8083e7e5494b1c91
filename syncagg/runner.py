"""The run loop: one collector thread between the workers and the outputs.

Who reads and who writes each queue and region::

    inputs ──> collector thread ──task pipe (one per worker)──> worker reader thread
                 ▲                                                 │ local queue
                 │ result pipe (one per worker): descriptors       ▼
                 └──────────────── worker main thread: fn(input), batches
                                      │ writes batch bytes
                                      ▼
                           ring region (one per worker) ── head written by the collector

    collector thread ──writer queue (one per output, bounded)──> writer thread ──> file
    collector thread ──one transaction per checkpoint──> SQLite file

This is the picture for worker processes (``processes.py``); with threads or
an executor (``executors.py``) the chunks and batches travel through the
executor instead of pipes and the ring. The collector thread is the only
thread of the parent that touches the source, the dispatcher, the strategy
and the checkpoint, so none of them needs a lock. The caller's thread only waits for it and turns Ctrl-C or SIGTERM into
a stop request.
"""

from __future__ import annotations

import logging
import threading
import time

from syncagg.checkpoint import Checkpoint, CheckpointState
from syncagg.collector import Collector
from syncagg.dispatcher import Dispatcher
from syncagg.memory import MemoryBudget, PeakMemory
from syncagg.records import JobResult
from syncagg.source import Source
from syncagg.transport import ResultBatch

__all__ = ["RunLoop", "stop_requested"]

logger = logging.getLogger("syncagg.runner")

_WAIT_SECONDS = 0.1


# The stop event of the run loop that runs in this thread, if any.
_current = threading.local()


def stop_requested() -> bool:
    """Return whether the run loop of this thread was asked to stop.

    The loop reads the inputs in its own thread, so an input iterable that
    waits (on standard input, a socket) can call this between waits and end
    the wait when it returns True. Outside a run loop it returns False.
    """
    stop: threading.Event | None = getattr(_current, "stop", None)
    return stop is not None and stop.is_set()


class RunLoop:
    """Drive one run from the collector thread until it completes or stops."""

    def __init__(
        self,
        source: Source,
        dispatcher: Dispatcher,
        collector: Collector,
        checkpoint: Checkpoint | None,
        state: CheckpointState,
        checkpoint_seconds: float,
        checkpoint_results: int,
        memory: PeakMemory,
        budget: MemoryBudget | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.dispatcher = dispatcher
        self.collector = collector
        self.checkpoint = checkpoint
        self.state = state
        self.memory = memory
        self.budget = budget
        self.error: BaseException | None = None
        self.completed = False
        self._checkpoint_seconds = checkpoint_seconds
        self._checkpoint_results = checkpoint_results
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        # Aggregator.stream passes its own event, which closing the stream sets.
        self._stop = stop if stop is not None else threading.Event()
        self.stop_timeout = 0.0
        self._drain_until: float | None = None
        self._abandon_in_flight = False
        # Set when run() returns; waiters use it instead of Thread.join.
        self.ended = threading.Event()

    def terminate(self) -> None:
        """Stop without waiting for jobs in flight; safe to call from any thread.

        For a second interrupt during a stop. The collector thread, which
        alone drives the source, kills the workers at its next step and then
        writes the last checkpoint with the results it has, so the jobs in
        flight run again on resume.
        """
        self._abandon_in_flight = True
        self._stop.set()

    def request_stop(self, drain: bool = False) -> None:
        """Ask the loop to stop taking jobs; safe to call from any thread.

        With ``drain``, jobs in flight get up to ``stop_timeout`` seconds to
        finish and be collected before the workers are stopped.
        """
        if drain and self._drain_until is None:
            self._drain_until = time.monotonic() + self.stop_timeout
        self._stop.set()

    def run(self) -> None:
        """Thread body: collect until done, then checkpoint and finish the outputs."""
        _current.stop = self._stop
        try:
            self._collect()
            if self._stop.is_set():
                self.source.terminate()
                self._save("running")
            elif self.dispatcher.input_error is not None:
                self._save("running")
            else:
                self._complete()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            self.error = exc
            self.source.terminate()
        finally:
            _current.stop = None
            self.ended.set()

    def _collect(self) -> None:
        source, dispatcher = self.source, self.dispatcher
        # A stop requested while the run was starting (SIGTERM) sends no job out.
        if not self._stop.is_set():
            source.dispatch(dispatcher, self)
        while not dispatcher.finished:
            if self._stop.is_set() and not self._draining():
                return
            source.poll(_WAIT_SECONDS, dispatcher, self)
            if not self._stop.is_set() and self._may_dispatch():
                source.dispatch(dispatcher, self)
            self._maybe_checkpoint()
            self.memory.sample()
            self.collector.progress.tick()

    def _draining(self) -> bool:
        """Return whether a stop still waits for jobs in flight to come back."""
        if self._abandon_in_flight or self._drain_until is None or not self.dispatcher.in_flight:
            return False
        return time.monotonic() < self._drain_until

    def _may_dispatch(self) -> bool:
        # A strategy that holds back values until earlier jobs arrive (an
        # ordered Reduce) lets the jobs in flight fill the gaps first. With
        # none in flight, the gap is a job waiting to be retried, which only
        # a dispatch sends.
        if self.collector.strategy.buffer_full and self.dispatcher.in_flight:
            return False
        # Near the memory budget, new jobs wait for those in flight; raises
        # MemoryLimitError when Collect has passed the budget.
        return self.budget is None or self.budget.allows_dispatch(self.dispatcher.in_flight)

    def add_batch(self, slot: int, batch: ResultBatch) -> None:
        """Collect a batch of results from one slot; may block on a full writer queue."""
        segments = self.dispatcher.complete(slot, batch.job_ids)
        self.dispatcher.observe(batch)
        self.collector.add_batch(batch, segments)
        self._since_checkpoint += len(batch)

    def add_failures(self, failures: list[JobResult]) -> None:
        """Record jobs that failed without a result."""
        if failures:
            self.collector.add_failures(failures)
            self._since_checkpoint += len(failures)

    def _maybe_checkpoint(self) -> None:
        if self.checkpoint is None or self._since_checkpoint == 0:
            return
        due = time.monotonic() - self._last_checkpoint >= self._checkpoint_seconds
        if due or self._since_checkpoint >= self._checkpoint_results:
            self._save("running")

    def _save(self, status: str) -> None:
        """Commit every output, then store one consistent cut in the checkpoint."""
        positions = self.collector.commit()
        if self.checkpoint is None:
            return

        state = self.state
        state.status = status
        state.done = self.collector.done
        state.strategy = self.collector.strategy.state()
        state.outputs.update(positions)
        state.counts = dict(self.collector.counts)
        state.failures = list(self.collector.failures)
        self.checkpoint.save(state)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    def _complete(self) -> None:
        self._save("finishing")
        # Every output is sealed before any is renamed, so an output that
        # fails to seal leaves none of the run's files under a final name.
        writers = self.collector.every_writer
        for writer in writers:
            writer.seal()
        for writer in writers:
            writer.publish()
        if self.checkpoint is not None:
            self.state.status = "finished"
            self.checkpoint.save(self.state)
        self.completed = True

