"""The loop that runs in each worker process.

A worker reads chunks of jobs from its own task pipe, runs the user's
function on each input, and hands the results to a ``BatchSender``, which
writes them into the worker's ring region and sends a descriptor on the
worker's own result pipe. Pipes are per worker because a
``multiprocessing.Queue`` shares a write lock between its writers, and a
writer killed while holding it would block every other worker forever.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from syncagg import sharedarray
from syncagg.batching import BatchSender
from syncagg.combiners import Combiner
from syncagg.records import error_fields
from syncagg.ring import RingWriter
from syncagg.segments import attach_segment, segment_buffer

__all__ = ["SPACE_MESSAGE", "STOP_SIGNALS", "WorkerSpec", "worker_main"]

logger = logging.getLogger("syncagg.worker")

_PARENT_GONE_EXIT = 70
# Exit status of a worker that cannot unpickle the inputs it was sent.
BAD_INPUT_EXIT = 71

# Sent on the task pipe when the parent released space that the worker waits for.
SPACE_MESSAGE = "space"

# The signals that stop a run: the parent handles them, workers ignore them.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})

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
    # The pid of the process that started this worker, when it is the
    # worker's direct parent (fork and spawn; not forkserver).
    parent_pid: int | None = None


def worker_main(spec: WorkerSpec) -> None:
    """Run jobs until the parent sends the stop message or disappears."""
    # Ctrl-C reaches the whole process group; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM sent to the whole group (timeout(1), systemd) must not kill a
    # job that the parent's stop would let finish; the parent kills workers
    # with SIGKILL when it has to.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The parent blocked both while it started this process; once ignored,
    # they can be let through, and jobs see the mask they expect.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    parent = os.getppid()
    if spec.parent_pid is not None and parent != spec.parent_pid:
        # The parent died while this worker started: nothing will ever read its results.
        os._exit(_PARENT_GONE_EXIT)

    def alive() -> bool:
        return os.getppid() == parent

    segment = attach_segment(spec.ring_name)
    space = threading.Event()
    ring = RingWriter(segment_buffer(segment), spec.slot, spec.capacity, spec.start, space)
    sender = BatchSender(ring, spec, alive)
    tasks: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
    reader = threading.Thread(
        target=_read_tasks,
        args=(spec.tasks, tasks, space, alive),
        name="syncagg-task-reader",
        daemon=True,
    )
    reader.start()
    sharedarray.install(sender.allocate)
    spec.results.send(("ready", os.getpid()))

    try:
        _run_jobs(spec.fn, tasks, ring, sender)
    except ConnectionError:
        os._exit(_PARENT_GONE_EXIT)
    finally:
        sharedarray.install(None)
        ring.release()
        try:
            segment.close()
        except BufferError:
            # An array from shared_array that the job function kept still
            # maps the segment; the process exits next, which unmaps it.
            logger.debug("ring segment still mapped by an array at exit")


def _read_tasks(
    conn: Connection,
    tasks: queue.SimpleQueue[_Chunk | None],
    space: threading.Event,
    alive: Callable[[], bool],
) -> None:
    # Draining the pipe in a thread means the parent's send never waits on a
    # worker that is busy or blocked on a full ring. SPACE_MESSAGE wakes a
    # main thread that waits for ring space.
    while True:
        try:
            if not conn.poll(0.5):
                if not alive():
                    os._exit(_PARENT_GONE_EXIT)
                continue
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(_PARENT_GONE_EXIT)
        except Exception:
            # An input that pickled in the parent but does not unpickle here.
            # Exiting lets the parent charge and retry the jobs, then fail them
            # with this exit code's cause, instead of waiting forever.
            logger.exception("cannot unpickle a chunk of inputs")
            os._exit(BAD_INPUT_EXIT)

        if message == SPACE_MESSAGE:
            space.set()
            continue
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
    # The hot loop of a worker. Per job it publishes 1 + the job id (one
    # 8-byte store), calls fn, reads the clock once, because a job starts
    # when the one before it finished, and appends to two columns held in
    # local names. The job ids enter the batch as slices of the chunk's ids,
    # and BatchSender.check sizes the batch only when the clock passes
    # ``next_check``, which it sets well before the batch can be full or old.
    job_ids, items = chunk
    clock = time.time
    jobs = ring.jobs
    # The chunk's job at position ``first + i`` has the value at index
    # ``base + i`` of the batch; the ids before ``first`` are in the batch.
    first = 0
    ring.set_busy()
    batch, base, next_check = sender.open(clock())
    values, errors = batch.values, batch.errors
    add_value, add_end = values.append, batch.finished.append

    for published, item in zip(_published(job_ids), items, strict=True):
        jobs[0] = published
        try:
            value = fn(item)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the job fails, the worker goes on
            value = None
            errors[len(values)] = error_fields(exc)
        finished = clock()
        add_value(value)
        add_end(finished)
        if finished < next_check:
            continue

        position = first + len(values) - base
        sender.add_ids(job_ids[first:position])
        first, base = position, len(values)
        # Dropped, so that a large array which check moves into the ring is
        # freed before the next job allocates its own.
        value = None
        next_check = sender.check(finished)
        if sender.batch is not batch:
            # Flushed: the next job opens a new batch, after the time the write took.
            ring.set_busy()
            batch, base, next_check = sender.open(clock())
            values, errors = batch.values, batch.errors
            add_value, add_end = values.append, batch.finished.append

    sender.add_ids(job_ids[first : first + len(values) - base])
    sender.next_check = next_check


def _published(job_ids: range | list[int]) -> range | list[int]:
    """Return 1 + each job id, the form the ring header publishes."""
    if isinstance(job_ids, range) and job_ids.step == 1:
        return range(job_ids.start + 1, job_ids.stop + 1)
    return [job_id + 1 for job_id in job_ids]


def _fold_chunk(fn: Callable[[Any], Any], chunk: _Chunk, ring: RingWriter, sender: BatchSender) -> None:
    # Each value is folded by BatchSender.add, so the value-column tricks of
    # _run_chunk would save nothing here.
    for job_id, item in zip(*chunk, strict=True):
        ring.set_running(job_id)
        started = time.time()
        try:
            value, error = fn(item), None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failed job, as in _run_chunk
            value, error = None, error_fields(exc)
        sender.add(job_id, value, started, time.time(), error)
