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

The collector thread is the only thread of the parent that touches the pool,
the dispatcher, the strategy and the checkpoint, so none of them needs a
lock. The caller's thread only waits for it and turns Ctrl-C or SIGTERM into
a stop request.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from syncagg.checkpoint import Checkpoint, CheckpointState
from syncagg.collector import Collector
from syncagg.dispatcher import Dispatcher, Job
from syncagg.pool import Slot, WorkerPool
from syncagg.progress import PeakMemory
from syncagg.records import JobError, JobResult, Status

__all__ = ["RunLoop"]

logger = logging.getLogger("syncagg.runner")

_WAIT_SECONDS = 0.1


class RunLoop:
    """Drive one run from the collector thread until it completes or stops."""

    def __init__(
        self,
        pool: WorkerPool,
        dispatcher: Dispatcher,
        collector: Collector,
        checkpoint: Checkpoint | None,
        state: CheckpointState,
        checkpoint_seconds: float,
        checkpoint_results: int,
        memory: PeakMemory,
    ) -> None:
        self.pool = pool
        self.dispatcher = dispatcher
        self.collector = collector
        self.checkpoint = checkpoint
        self.state = state
        self.memory = memory
        self.error: BaseException | None = None
        self.completed = False
        self._checkpoint_seconds = checkpoint_seconds
        self._checkpoint_results = checkpoint_results
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Ask the loop to stop taking jobs; safe to call from any thread."""
        self._stop.set()

    def run(self) -> None:
        """Thread body: collect until done, then checkpoint and finish the outputs."""
        try:
            self._collect()
            if self._stop.is_set():
                self.pool.terminate()
                self._save("running")
            elif self.dispatcher.input_error is not None:
                self._save("running")
            else:
                self._complete()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            self.error = exc
            self.pool.terminate()

    def _collect(self) -> None:
        self._dispatch()
        while not self._stop.is_set() and not self.dispatcher.finished:
            sources = self._sources()
            for ready in wait(list(sources), timeout=_WAIT_SECONDS):
                slot, is_result_pipe = sources[ready]
                if is_result_pipe:
                    self._receive(slot)
                else:
                    self._worker_exited(slot)
            self._dispatch()
            self._maybe_checkpoint()
            self.memory.sample()

    def _sources(self) -> dict[Any, tuple[Slot, bool]]:
        sources: dict[Any, tuple[Slot, bool]] = {}
        for slot in self.pool.slots:
            sources[slot.results] = (slot, True)
            sources[slot.process.sentinel] = (slot, False)
        return sources

    def _receive(self, slot: Slot) -> None:
        """Handle every message waiting on a worker's result pipe; never blocks."""
        conn: Connection = slot.results
        try:
            while conn.poll(0):
                self._handle(slot, conn.recv())
        except (EOFError, OSError):
            # The worker is gone; its sentinel reports it.
            return

    def _handle(self, slot: Slot, message: tuple[Any, ...]) -> None:
        if message[0] == "ready":
            slot.ready = True
            return

        batch = self.pool.read(slot, message)
        jobs = self.dispatcher.complete(slot.index, batch.job_ids)
        self.dispatcher.observe(batch.started, batch.finished)
        self.collector.add_batch(batch, jobs)
        self._since_checkpoint += len(batch)

    def _worker_exited(self, slot: Slot) -> None:
        """Collect what a dead worker sent, settle its jobs and start a replacement."""
        self._receive(slot)
        self.pool.check_start(slot)
        slot.process.join()

        code = slot.process.exitcode
        cause = f"exited with signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        pid = slot.process.pid or 0
        failures = self.dispatcher.worker_died(slot.index, pid, slot.ring.running_job(), cause)
        self.collector.add_failures(failures)
        logger.warning("worker %d (pid %d) %s; starting a replacement", slot.index, pid, cause)
        self.pool.replace(slot)

    def _dispatch(self) -> None:
        """Top up every worker's jobs; reads the inputs, which may block."""
        for slot in self.pool.slots:
            chunk = self.dispatcher.next_chunk(slot.index)
            if chunk:
                self._send(slot, chunk)

    def _send(self, slot: Slot, chunk: list[Job]) -> None:
        message = [(job.job_id, job.item) for job in chunk]
        try:
            payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            payload = self._drop_unpicklable(slot, chunk)
        try:
            slot.tasks.send_bytes(payload)
        except OSError:
            # A dead worker's jobs are settled when its sentinel fires.
            return

    def _drop_unpicklable(self, slot: Slot, chunk: list[Job]) -> bytes:
        sendable = []
        failed = []
        for job in chunk:
            try:
                pickle.dumps(job.item, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                failed.append(_unpicklable(job, exc))
            else:
                sendable.append((job.job_id, job.item))

        self.dispatcher.complete(slot.index, [result.job_id for result in failed])
        self.collector.add_failures(failed)
        return pickle.dumps(sendable, protocol=pickle.HIGHEST_PROTOCOL)

    def _maybe_checkpoint(self) -> None:
        if self.checkpoint is None or self._since_checkpoint == 0:
            return
        due = time.monotonic() - self._last_checkpoint >= self._checkpoint_seconds
        if due or self._since_checkpoint >= self._checkpoint_results:
            self._save("running")

    def _save(self, status: str) -> None:
        """Commit every output, then store one consistent cut in the checkpoint."""
        positions = {str(w.output.path): w.commit() for w in self.collector.writers}
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
        for writer in self.collector.writers:
            writer.finish()
        if self.checkpoint is not None:
            self.state.status = "finished"
            self.checkpoint.save(self.state)
        self.completed = True


def _unpicklable(job: Job, exc: Exception) -> JobResult:
    message = (
        f"input of type {type(job.item).__qualname__} cannot be pickled for a worker "
        f"process ({exc}); pass inputs of plain data such as paths, strings or dicts"
    )
    return JobResult(
        job_id=job.job_id,
        key=job.key,
        status=Status.FAILED,
        value=None,
        error=JobError("syncagg.UnpicklableInput", message),
        worker_pid=0,
        started=0.0,
        finished=0.0,
        attempts=job.attempts,
    )
