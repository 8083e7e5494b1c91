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
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from syncagg.combiners import Combiner
from syncagg.folding import BatchFolder
from syncagg.ring import JOB_OFFSET, RingWriter
from syncagg.segments import attach_segment, create_segment
from syncagg.transport import ResultBatch, encode_message, estimate_size

__all__ = ["WorkerSpec", "worker_main"]

_PARENT_GONE_EXIT = 70

# Job ids (a range for fresh inputs) and the inputs, in the same order.
_Chunk = tuple[range | list[int], list[Any]]


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
    # With Combine(..., in_workers=True): fold each batch's values into one accumulator.
    combiner: Combiner | None = None


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
    tasks: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
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
    tasks: queue.SimpleQueue[_Chunk | None],
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
    tasks: queue.SimpleQueue[_Chunk | None],
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
        if sender.folder is None:
            _run_chunk(fn, chunk, ring, sender)
        else:
            _fold_chunk(fn, chunk, ring, sender)
        ring.set_running(None)


def _run_chunk(fn: Callable[[Any], Any], chunk: _Chunk, ring: RingWriter, sender: BatchSender) -> None:
    # The hot loop of a worker. It inlines BatchSender.add for successful
    # jobs and keeps the batch's columns in local names, which makes it
    # about twice as fast; the columns are bound again after each flush.
    clock = time.time
    publish = ring.publish_job
    header = ring.header
    latency = sender.latency
    limit = sender.batch_bytes
    batch = sender.batch
    ids, values, starts, ends = batch.job_ids, batch.values, batch.started, batch.finished

    for job_id, item in zip(*chunk):
        publish(header, JOB_OFFSET, job_id + 1, job_id + 1)
        started = clock()
        try:
            value = fn(item)
        except (Exception, SystemExit) as exc:
            error = (_type_name(exc), str(exc), traceback.format_exc())
            sender.add(job_id, None, started, clock(), error)
            batch = sender.batch
            ids, values, starts, ends = batch.job_ids, batch.values, batch.started, batch.finished
            continue

        finished = clock()
        if not ids:
            sender.opened = started
            sender.sampled = 0
        ids.append(job_id)
        values.append(value)
        starts.append(started)
        ends.append(finished)

        # Sizing every value would cost more than the rest of this loop, so
        # one value in _SAMPLE_EVERY is sized and stands for those after it.
        size = _SIZES.get(type(value), 0)
        if not size:
            if not sender.sampled:
                sender.estimate = estimate_size(value)
            sender.sampled = (sender.sampled + 1) % _SAMPLE_EVERY
            size = sender.estimate
        sender.size += size

        if sender.size >= limit or finished - sender.opened >= latency or finished - started >= latency:
            sender.flush()
            batch = sender.batch
            ids, values, starts, ends = batch.job_ids, batch.values, batch.started, batch.finished


def _fold_chunk(fn: Callable[[Any], Any], chunk: _Chunk, ring: RingWriter, sender: BatchSender) -> None:
    # Each value is folded by BatchSender.add, so the value-column tricks of
    # _run_chunk would save nothing here.
    for job_id, item in zip(*chunk, strict=True):
        ring.set_running(job_id)
        started = time.time()
        try:
            value, error = fn(item), None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failed job, as in _run_chunk
            value, error = None, (_type_name(exc), str(exc), traceback.format_exc())
        sender.add(job_id, value, started, time.time(), error)


_SAMPLE_EVERY = 16

# Estimated encoded sizes of common result types, so that most values are
# not inspected one by one.
_SIZES: dict[type, int] = {int: 16, float: 16, bool: 8, type(None): 4}


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
        self.batch_bytes = spec.batch_bytes
        self.latency = spec.batch_latency
        self._prefix = f"{spec.segment_prefix}w{os.getpid()}-"
        self._segments = 0
        self.folder = None if spec.combiner is None else BatchFolder(spec.combiner)
        self._new_batch()

    def _new_batch(self) -> None:
        self.batch = ResultBatch(os.getpid())
        self.size = 0
        self.opened = 0.0
        self.sampled = 0
        self.estimate = 0

    def add(
        self,
        job_id: int,
        value: Any,
        started: float,
        finished: float,
        error: tuple[str, str, str] | None,
    ) -> None:
        """Add one result; flush if the batch is full, old, or the job was slow."""
        batch = self.batch
        if not batch.job_ids:
            self.opened = started
        if error is None and self.folder is not None:
            value, error = self.folder.add(value)
        if error is not None:
            batch.errors[len(batch.job_ids)] = error
        batch.job_ids.append(job_id)
        batch.values.append(value)
        batch.started.append(started)
        batch.finished.append(finished)
        self.size += estimate_size(value)

        # A job slower than the latency bound means the next one is likely
        # slow too, so its result goes out now instead of waiting for it.
        if (
            self.size >= self.batch_bytes
            or finished - self.opened >= self.latency
            or finished - started >= self.latency
        ):
            self.flush()

    def flush(self) -> None:
        """Write the pending batch into the ring and send its descriptor."""
        batch = self.batch
        if not batch.job_ids:
            return
        # Writing a batch is no job: a worker that dies or waits for ring
        # space now is charged for the jobs it started, not for the last one,
        # and the parent's timeout clock does not run meanwhile.
        self._ring.set_running(None)
        if self.folder is not None:
            batch.partials = self.folder.take()
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
            # The same pickler as for the batch, so a value it accepts passes here.
            encode_message(value).release()
        except Exception as exc:
            batch.values[i] = None
            batch.errors[i] = (
                "syncagg.UnpicklableResult",
                f"the function returned a {type(value).__qualname__}, which cannot be pickled: {exc}; "
                "return plain data (dicts, lists, numbers, strings, numpy arrays)",
                "",
            )
    return encode_message(batch)
