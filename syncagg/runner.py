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
from syncagg.dispatcher import Chunk, Dispatcher
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
        segments = self.dispatcher.complete(slot.index, batch.job_ids)
        self.dispatcher.observe(batch.started, batch.finished)
        self.collector.add_batch(batch, segments)
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
            if chunk is not None:
                self._send(slot, chunk)

    def _send(self, slot: Slot, chunk: Chunk) -> None:
        try:
            payload = pickle.dumps(chunk.message(), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            chunk = self._drop_unpicklable(chunk)
            if not chunk.items:
                return
            payload = pickle.dumps(chunk.message(), protocol=pickle.HIGHEST_PROTOCOL)

        self.dispatcher.register(slot.index, chunk)
        try:
            slot.tasks.send_bytes(payload)
        except OSError:
            # A dead worker's jobs are settled when its sentinel fires.
            return

    def _drop_unpicklable(self, chunk: Chunk) -> Chunk:
        kept = Chunk([], [], [])
        failed = []
        for job_id, item, attempts in zip(chunk.job_ids, chunk.items, chunk.attempts):
            try:
                pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                failed.append(self._unpicklable(job_id, item, attempts + 1, exc))
                continue
            assert isinstance(kept.job_ids, list)
            kept.job_ids.append(job_id)
            kept.items.append(item)
            kept.attempts.append(attempts)

        self.collector.add_failures(failed)
        return kept

    def _unpicklable(self, job_id: int, item: Any, attempts: int, exc: Exception) -> JobResult:
        message = (
            f"input of type {type(item).__qualname__} cannot be pickled for a worker "
            f"process ({exc}); pass inputs of plain data such as paths, strings or dicts"
        )
        return JobResult(
            job_id=job_id,
            key=self.dispatcher.key(item),
            status=Status.FAILED,
            value=None,
            error=JobError("syncagg.UnpicklableInput", message),
            worker_pid=0,
            started=0.0,
            finished=0.0,
            attempts=attempts,
        )

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

