"""The loop that runs in each worker process.

A worker reads chunks of jobs from its own task pipe, runs the user's
function on each input, and hands the results to a ``BatchSender``, which
writes them into the worker's ring region and sends a descriptor on the
worker's own result pipe. Pipes are per worker because a
``multiprocessing.Queue`` shares a write lock between its writers, and a
writer killed while holding it would block every other worker forever.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from syncagg.ring import RingWriter
from syncagg.segments import attach_segment, create_segment
from syncagg.transport import ResultBatch, encode_message, estimate_size

__all__ = ["WorkerSpec", "worker_main"]

_PARENT_GONE_EXIT = 70


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, passed once when it starts."""

    fn: Callable[[Any], Any]
    slot: int
    ring_name: str
    capacity: int
    start: int
    tasks: Connection
    results: Connection
    batch_bytes: int
    batch_latency: float
    segment_prefix: str


def worker_main(spec: WorkerSpec) -> None:
    """Run jobs until the parent sends the stop message or disappears."""
    # Ctrl-C reaches the whole process group; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def alive() -> bool:
        return os.getppid() == parent

    segment = attach_segment(spec.ring_name)
    ring = RingWriter(segment.buf, spec.slot, spec.capacity, spec.start)
    sender = BatchSender(ring, spec, alive)
    tasks: queue.SimpleQueue[list[tuple[int, Any]] | None] = queue.SimpleQueue()
    reader = threading.Thread(
        target=_read_tasks,
        args=(spec.tasks, tasks, alive),
        name="syncagg-task-reader",
        daemon=True,
    )
    reader.start()
    spec.results.send(("ready", os.getpid()))

    try:
        _run_jobs(spec.fn, tasks, ring, sender)
    except ConnectionError:
        os._exit(_PARENT_GONE_EXIT)
    finally:
        ring.release()
        segment.close()


def _read_tasks(
    conn: Connection,
    tasks: queue.SimpleQueue[list[tuple[int, Any]] | None],
    alive: Callable[[], bool],
) -> None:
    # Draining the pipe in a thread means the parent's send never waits on a
    # worker that is busy or blocked on a full ring.
    while True:
        try:
            if not conn.poll(0.5):
                if not alive():
                    os._exit(_PARENT_GONE_EXIT)
                continue
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(_PARENT_GONE_EXIT)

        tasks.put(message)
        if message is None:
            return


def _run_jobs(
    fn: Callable[[Any], Any],
    tasks: queue.SimpleQueue[list[tuple[int, Any]] | None],
    ring: RingWriter,
    sender: BatchSender,
) -> None:
    while True:
        try:
            chunk = tasks.get_nowait()
        except queue.Empty:
            # Idle: deliver what is held back before waiting for more work.
            sender.flush()
            chunk = tasks.get()

        if chunk is None:
            sender.flush()
            return

        for job_id, item in chunk:
            ring.set_running(job_id)
            _run_one(fn, job_id, item, sender)
        ring.set_running(None)


def _run_one(fn: Callable[[Any], Any], job_id: int, item: Any, sender: BatchSender) -> None:
    started = time.time()
    try:
        value = fn(item)
    except (Exception, SystemExit) as exc:
        finished = time.time()
        error = (_type_name(exc), str(exc), traceback.format_exc())
        sender.add(job_id, None, started, finished, error)
        return

    finished = time.time()
    sender.add(job_id, value, started, finished, None)


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


class BatchSender:
    """Gathers results and flushes them by size and by age."""

    def __init__(self, ring: RingWriter, spec: WorkerSpec, alive: Callable[[], bool]) -> None:
        self._ring = ring
        self._conn = spec.results
        self._alive = alive
        self._batch_bytes = spec.batch_bytes
        self._latency = spec.batch_latency
        self._prefix = f"{spec.segment_prefix}w{os.getpid()}-"
        self._segments = 0
        self._new_batch()

    def _new_batch(self) -> None:
        self._batch = ResultBatch(os.getpid())
        self._bytes = 0
        self._opened = 0.0

    def add(
        self,
        job_id: int,
        value: Any,
        started: float,
        finished: float,
        error: tuple[str, str, str] | None,
    ) -> None:
        """Add one result; flush if the batch is full, old, or the job was slow."""
        batch = self._batch
        if not batch.job_ids:
            self._opened = started
        if error is not None:
            batch.errors[len(batch.job_ids)] = error
        batch.job_ids.append(job_id)
        batch.values.append(value)
        batch.started.append(started)
        batch.finished.append(finished)
        self._bytes += estimate_size(value)

        # A job slower than the latency bound means the next one is likely
        # slow too, so its result goes out now instead of waiting for it.
        if (
            self._bytes >= self._batch_bytes
            or finished - self._opened >= self._latency
            or finished - started >= self._latency
        ):
            self.flush()

    def flush(self) -> None:
        """Write the pending batch into the ring and send its descriptor."""
        batch = self._batch
        if not batch.job_ids:
            return
        self._new_batch()

        message = _encode_batch(batch)
        try:
            if message.size > self._ring.capacity:
                self._send_in_segment(message, len(batch))
                return
            start, target = self._ring.reserve(message.size, self._alive)
            with target:
                message.write_into(target)
            end = start + message.size
            self._ring.commit(end)
            self._conn.send(("ring", start, end, len(batch)))
        finally:
            message.release()

    def _send_in_segment(self, message: Any, count: int) -> None:
        # Larger than the whole region: a segment of its own, which the parent
        # unlinks after reading, so it never waits for ring space that cannot exist.
        name = f"{self._prefix}{self._segments}"
        self._segments += 1
        segment = create_segment(name, message.size)
        try:
            with segment.buf[: message.size] as target:
                message.write_into(target)
        finally:
            segment.close()
        self._conn.send(("segment", name, message.size, count))


def _encode_batch(batch: ResultBatch) -> Any:
    try:
        return encode_message(batch)
    except Exception:
        pass

    # Some value does not pickle: fail just those jobs and keep the rest.
    for i, value in enumerate(batch.values):
        if i in batch.errors:
            continue
        try:
            pickle.dumps(value, protocol=5, buffer_callback=lambda b: None)
        except Exception as exc:
            batch.values[i] = None
            batch.errors[i] = (
                "syncagg.UnpicklableResult",
                f"the function returned a {type(value).__qualname__}, which cannot be pickled: {exc}; "
                "return plain data (dicts, lists, numbers, strings, numpy arrays)",
                "",
            )
    return encode_message(batch)
