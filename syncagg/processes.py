"""Running jobs in worker processes that return results through the ring."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from syncagg.dispatcher import Chunk, Dispatcher, Started
from syncagg.pool import Slot, UndecodableBatch, WorkerPool
from syncagg.records import JobError, JobResult, Status
from syncagg.source import Sink, Source
from syncagg.worker import BAD_INPUT_EXIT

__all__ = ["ProcessSource"]

logger = logging.getLogger("syncagg.processes")


class ProcessSource(Source):
    """Send chunks on each worker's task pipe and read batches from its ring region.

    With ``timeout`` (seconds), a worker whose job runs longer is killed and
    replaced, and the job counts as an attempt like one whose worker died:
    it is retried, or failed with the error type ``syncagg.Timeout`` once out
    of retries.
    """

    def __init__(self, pool: WorkerPool, timeout: float | None = None) -> None:
        self.pool = pool
        self.slots = len(pool.slots)
        self.timeout = timeout
        # Slot index -> (job id the worker published as running, when the
        # parent first saw it). The clock starts at that sighting, so a job is
        # never killed early, only up to one poll late.
        self._running: dict[int, tuple[int, float]] = {}

    def dispatch(self, dispatcher: Dispatcher, sink: Sink) -> None:
        for slot in self.pool.slots:
            chunk = dispatcher.next_chunk(slot.index)
            if chunk is not None:
                self._send(slot, chunk, dispatcher, sink)

    def poll(self, timeout: float, dispatcher: Dispatcher, sink: Sink) -> None:
        sources: dict[Any, tuple[Slot, bool]] = {}
        for slot in self.pool.slots:
            sources[slot.results] = (slot, True)
            sources[slot.process.sentinel] = (slot, False)

        exited = set()
        for ready in wait(list(sources), timeout=timeout):
            slot, is_result_pipe = sources[ready]
            if slot.index in exited:
                continue
            if is_result_pipe:
                self._receive(slot, dispatcher, sink, drain=False)
            else:
                exited.add(slot.index)
                self._worker_exited(slot, dispatcher, sink)

        # A child that the job forked keeps the sentinel's pipe open after
        # the worker dies, so the exit status is checked directly as well.
        for slot in list(self.pool.slots):
            if slot.index not in exited and slot.process.exitcode is not None:
                self._worker_exited(slot, dispatcher, sink)
        if self.timeout is not None:
            self._check_timeouts(dispatcher, sink)
        if self.pool.lend:
            self.pool.wake_waiting()

    def lend_views(self) -> None:
        """Lend large buffers as views of the ring; see ``WorkerPool.settle``."""
        self.pool.lend = True

    def terminate(self) -> None:
        self.pool.terminate()

    def close(self) -> None:
        self.pool.close()

    def _receive(self, slot: Slot, dispatcher: Dispatcher, sink: Sink, drain: bool = True) -> None:
        """Handle the messages waiting on a worker's result pipe; never blocks.

        Without ``drain`` it stops after one batch, so that the run loop
        sends the worker new inputs before it reads the next batch. A worker
        that is ahead of the collector has many batches waiting, and reading
        them all first left it without work for tens of milliseconds.
        """
        conn: Connection = slot.results
        try:
            while conn.poll(0):
                message = conn.recv()
                if message[0] == "ready":
                    slot.ready = True
                    continue
                try:
                    sink.add_batch(slot.index, self.pool.read(slot, message))
                except UndecodableBatch as exc:
                    sink.add_failures(_undecodable(slot, exc, dispatcher))
                if self.pool.lend:
                    self.pool.settle(slot)
                # A worker that waited for ring space was not running a job
                # meanwhile, so its clock starts again.
                self._running.pop(slot.index, None)
                if not drain:
                    return
        except (EOFError, OSError):
            # The worker is gone; its sentinel reports it.
            return

    def _check_timeouts(self, dispatcher: Dispatcher, sink: Sink) -> None:
        assert self.timeout is not None
        now = time.monotonic()
        for slot in list(self.pool.slots):
            job = slot.ring.running_job()
            seen = self._running.get(slot.index)
            if job is None:
                self._running.pop(slot.index, None)
            elif seen is None or seen[0] != job:
                self._running[slot.index] = (job, now)
            elif now - seen[1] > self.timeout:
                slot.process.kill()
                self._worker_exited(slot, dispatcher, sink, timed_out=True)

    def _worker_exited(self, slot: Slot, dispatcher: Dispatcher, sink: Sink, timed_out: bool = False) -> None:
        """Collect what a dead worker sent, settle its jobs and start a replacement."""
        self._receive(slot, dispatcher, sink)
        self.pool.check_start(slot)
        slot.process.join()
        self._running.pop(slot.index, None)

        code = slot.process.exitcode
        # The worker is gone, so these fields no longer change.
        running = slot.ring.running_job()
        started: int | None | Started = slot.ring.started_job()
        if timed_out:
            cause = f"was killed because its job ran longer than the {self.timeout:g} s timeout"
        elif code is not None and code < 0:
            cause = f"exited with signal {-code}"
        elif code == BAD_INPUT_EXIT:
            cause = "could not unpickle the inputs it was sent"
            # No job of the chunk started, but sending it again free of
            # charge would repeat the failure forever.
            running, started = None, Started.UNKNOWN
        else:
            cause = f"exited with code {code}"
        pid = slot.process.pid or 0
        failures = dispatcher.worker_died(slot.index, pid, running, cause, started=started)
        if timed_out:
            failures = [_as_timeout(failure) for failure in failures]
        sink.add_failures(failures)

        if running is None:
            logger.warning("worker %d (pid %d) %s; starting a replacement", slot.index, pid, cause)
        else:
            logger.warning(
                "worker %d (pid %d) %s while running job %d; starting a replacement, and job %d "
                "runs again unless it is out of retries",
                slot.index, pid, cause, running, running,
            )
        self.pool.replace(slot)

    def _send(self, slot: Slot, chunk: Chunk, dispatcher: Dispatcher, sink: Sink) -> None:
        try:
            payload = pickle.dumps(chunk.message(), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - find the inputs that do not pickle
            chunk = _drop_unpicklable(chunk, dispatcher, sink)
            if not chunk.items:
                return
            payload = pickle.dumps(chunk.message(), protocol=pickle.HIGHEST_PROTOCOL)

        dispatcher.register(slot.index, chunk)
        dispatcher.measure_payload(len(payload), len(chunk.items))
        try:
            slot.tasks.send_bytes(payload)
        except OSError:
            # A dead worker's jobs are settled when its sentinel fires.
            return


def _as_timeout(failure: JobResult) -> JobResult:
    """Give a job failed by its timeout the error type ``syncagg.Timeout``."""
    assert failure.error is not None
    return dataclasses.replace(failure, error=JobError("syncagg.Timeout", failure.error.message))


def _drop_unpicklable(chunk: Chunk, dispatcher: Dispatcher, sink: Sink) -> Chunk:
    """Fail the inputs that cannot be pickled and return a chunk of the rest."""
    job_ids: list[int] = []
    items: list[Any] = []
    kept_attempts: list[int] = []
    failed = []
    for job_id, item, attempts in zip(chunk.job_ids, chunk.items, chunk.attempts, strict=True):
        try:
            pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - the input fails its job, whatever the error
            failed.append(_unpicklable(job_id, dispatcher.key(item), item, attempts + 1, exc))
            continue
        job_ids.append(job_id)
        items.append(item)
        kept_attempts.append(attempts)

    sink.add_failures(failed)
    return Chunk(job_ids, items, kept_attempts)


def _unpicklable(job_id: int, key: str, item: Any, attempts: int, exc: Exception) -> JobResult:
    message = (
        f"input of type {type(item).__qualname__} cannot be pickled for a worker "
        f"process ({exc}); pass inputs of plain data such as paths, strings or dicts"
    )
    return JobResult(
        job_id=job_id,
        key=key,
        status=Status.FAILED,
        value=None,
        error=JobError("syncagg.UnpicklableInput", message),
        worker_pid=0,
        started=0.0,
        finished=0.0,
        attempts=attempts,
    )


def _undecodable(slot: Slot, exc: UndecodableBatch, dispatcher: Dispatcher) -> list[JobResult]:
    pid = slot.process.pid or 0
    message = (
        f"the result pickled in worker {pid} but does not unpickle in the parent ({exc}); "
        "every job of its batch fails with it. Return plain data (dicts, lists, numbers, "
        "strings, numpy arrays), or make the type importable in the parent"
    )
    error = JobError("syncagg.UndecodableResult", message)
    return dispatcher.fail_next(slot.index, exc.count, pid, error)
