"""Which jobs a dead worker is charged for: the running one, the started ones, or none."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from syncagg.dispatcher import Dispatcher
from syncagg.jobranges import JobRanges
from syncagg.pool import WorkerPool
from syncagg.processes import ProcessSource
from syncagg.records import JobResult
from syncagg.transport import ResultBatch
from tests import jobs

_MiB = 1024 * 1024
_CAUSE = "exited with signal 9"


class RecordingSink:
    """A run loop reduced to what these tests check: values by job id and failures."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.values: dict[int, list[Any]] = {}
        self.failures: list[JobResult] = []

    def add_batch(self, slot: int, batch: ResultBatch) -> None:
        self.dispatcher.complete(slot, list(batch.job_ids))
        for job_id, value in zip(batch.job_ids, batch.values, strict=True):
            self.values.setdefault(job_id, []).append(value)

    def add_failures(self, failures: list[JobResult]) -> None:
        self.failures.extend(failures)


def _dispatcher(count: int, retries: int = 0) -> Dispatcher:
    return Dispatcher(range(count), workers=1, done=JobRanges(), chunksize=5, retries=retries)


def _poll_until(source: ProcessSource, dispatcher: Dispatcher, sink: RecordingSink, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for the workers"
        source.poll(0.05, dispatcher, sink)


def _ready_worker(source: ProcessSource, dispatcher: Dispatcher, sink: RecordingSink) -> int:
    """Wait until slot 0's worker reported ready; return its pid."""
    _poll_until(source, dispatcher, sink, lambda: source.pool.slots[0].ready)
    pid = source.pool.slots[0].process.pid
    assert pid is not None
    return pid


def _fill(source: ProcessSource, dispatcher: Dispatcher, sink: RecordingSink) -> None:
    """Send slot 0 two chunks of 5."""
    for _ in range(2):
        source.dispatch(dispatcher, sink)


def _kill_holding_jobs(source: ProcessSource, dispatcher: Dispatcher, sink: RecordingSink) -> list[int]:
    """Stop the ready worker, send it chunks it cannot read, then SIGKILL it.

    Returns the ids of the jobs it held when it died.
    """
    pid = _ready_worker(source, dispatcher, sink)
    os.kill(pid, signal.SIGSTOP)
    _fill(source, dispatcher, sink)
    held = dispatcher.held_jobs(0)
    os.kill(pid, signal.SIGKILL)
    _poll_until(source, dispatcher, sink, lambda: source.pool.slots[0].process.pid != pid)
    return held


def test_idle_worker_kill_fails_no_job() -> None:
    dispatcher = _dispatcher(40)
    sink = RecordingSink(dispatcher)
    pool = WorkerPool(jobs.square, workers=1, region_bytes=_MiB, batch_bytes=_MiB, batch_latency=0.05)
    source = ProcessSource(pool)
    try:
        # The worker runs jobs 0-9 and goes idle with job 9 as its last started.
        _ready_worker(source, dispatcher, sink)
        _fill(source, dispatcher, sink)
        _poll_until(source, dispatcher, sink, lambda: dispatcher.in_flight == 0)
        assert pool.slots[0].ring.running_job() is None
        assert pool.slots[0].ring.started_job() == 9

        held_by_idle = _kill_holding_jobs(source, dispatcher, sink)
        # The replacement has started nothing when it dies holding the same jobs again.
        assert pool.slots[0].ring.started_job() is None
        held_by_fresh = _kill_holding_jobs(source, dispatcher, sink)

        while not dispatcher.finished:
            source.dispatch(dispatcher, sink)
            source.poll(0.05, dispatcher, sink)
    finally:
        source.close()

    assert held_by_idle == list(range(10, 20))
    assert held_by_fresh == list(range(10, 20))
    assert sink.failures == []
    assert sorted(sink.values) == list(range(40))
    for job_id, values in sink.values.items():
        assert values == [jobs.square(job_id)]


def _held(dispatcher: Dispatcher, count: int) -> None:
    """Send ``count`` jobs to slot 0 as chunks of 5."""
    while dispatcher.in_flight < count:
        chunk = dispatcher.next_chunk(0)
        assert chunk is not None
        dispatcher.register(0, chunk)


def _retried(dispatcher: Dispatcher) -> list[tuple[int, int]]:
    """Return (job id, attempts) of every job waiting to be sent again."""
    retried = []
    while (chunk := dispatcher.next_chunk(0)) is not None:
        retried.extend(zip(chunk.job_ids, chunk.attempts, strict=True))
        dispatcher.register(0, chunk)
    return retried


def test_running_job_charged_alone() -> None:
    dispatcher = _dispatcher(10)
    _held(dispatcher, 10)
    dispatcher.complete(0, [0, 1])

    failed = dispatcher.worker_died(0, 123, 4, _CAUSE, started=4)

    assert [failure.job_id for failure in failed] == [4]
    assert failed[0].attempts == 1
    assert failed[0].error is not None
    assert failed[0].error.type == "syncagg.WorkerDied"
    # Sent again uncharged: each job keeps its count of 0 attempts.
    assert _retried(dispatcher) == [(2, 0), (3, 0), (5, 0), (6, 0), (7, 0), (8, 0), (9, 0)]


def test_started_jobs_charged_when_idle() -> None:
    # Died between jobs with results for 0 and 1 delivered: jobs 2 to 5 had
    # started, so the worker may have died writing their results.
    dispatcher = _dispatcher(10)
    _held(dispatcher, 10)
    dispatcher.complete(0, [0, 1])

    failed = dispatcher.worker_died(0, 123, None, _CAUSE, started=5)

    assert [failure.job_id for failure in failed] == [2, 3, 4, 5]
    assert _retried(dispatcher) == [(6, 0), (7, 0), (8, 0), (9, 0)]


def test_started_jobs_retried_within_retries() -> None:
    dispatcher = _dispatcher(10, retries=1)
    _held(dispatcher, 10)

    failed = dispatcher.worker_died(0, 123, None, _CAUSE, started=1)

    assert failed == []
    assert _retried(dispatcher) == [(0, 1), (1, 1), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0), (9, 0)]


def test_delivered_last_started_charges_none() -> None:
    # Job 4 was the last started and its result arrived: jobs 5 to 9 never ran.
    dispatcher = _dispatcher(10)
    _held(dispatcher, 10)
    dispatcher.complete(0, [0, 1, 2, 3, 4])

    failed = dispatcher.worker_died(0, 123, None, _CAUSE, started=4)

    assert failed == []
    assert _retried(dispatcher) == [(5, 0), (6, 0), (7, 0), (8, 0), (9, 0)]


def test_unknown_started_charges_every_job() -> None:
    # Sources that cannot see inside a worker pass no ``started``.
    dispatcher = _dispatcher(10)
    _held(dispatcher, 10)
    dispatcher.complete(0, [0, 1])

    failed = dispatcher.worker_died(0, 123, None, _CAUSE)

    assert [failure.job_id for failure in failed] == list(range(2, 10))
    assert _retried(dispatcher) == []


def test_fresh_worker_charges_none() -> None:
    dispatcher = _dispatcher(10)
    _held(dispatcher, 10)

    failed = dispatcher.worker_died(0, 123, None, _CAUSE, started=None)

    assert failed == []
    assert [job_id for job_id, _ in _retried(dispatcher)] == list(range(10))


def test_large_chunk_goes_out_while_worker_is_stopped() -> None:
    # Six 100 kB inputs fill the default 64 KiB pipe nine times over. The
    # task pipe is widened, so the collector's send returns at once, even
    # though the stopped worker reads nothing.
    inputs = [bytes([i]) * 100_000 for i in range(6)]
    dispatcher = Dispatcher(inputs, workers=1, done=JobRanges(), chunksize=6)
    sink = RecordingSink(dispatcher)
    pool = WorkerPool(len, workers=1, region_bytes=_MiB, batch_bytes=_MiB, batch_latency=0.05)
    source = ProcessSource(pool)
    sender = threading.Thread(target=source.dispatch, args=(dispatcher, sink), daemon=True)
    try:
        pid = _ready_worker(source, dispatcher, sink)
        os.kill(pid, signal.SIGSTOP)
        sender.start()
        sender.join(5)
        sent_while_stopped = not sender.is_alive()
        os.kill(pid, signal.SIGCONT)
        sender.join()
        _poll_until(source, dispatcher, sink, lambda: dispatcher.in_flight == 0)
    finally:
        source.close()

    assert sent_while_stopped
    assert sink.values == {i: [100_000] for i in range(6)}


def test_poll_reads_one_batch() -> None:
    # Between two batches of the same worker the run loop sends new inputs,
    # so a worker that is ahead of the collector does not run dry.
    dispatcher = Dispatcher(range(20), workers=1, done=JobRanges(), chunksize=20)
    sink = RecordingSink(dispatcher)
    pool = WorkerPool(jobs.square, workers=1, region_bytes=_MiB, batch_bytes=1, batch_latency=0.05)
    source = ProcessSource(pool)
    try:
        _ready_worker(source, dispatcher, sink)
        source.dispatch(dispatcher, sink)
        deadline = time.monotonic() + 60
        while pool.slots[0].ring.started_job() != 19 or pool.slots[0].ring.running_job() is not None:
            assert time.monotonic() < deadline, "timed out waiting for the worker"
            time.sleep(0.01)
        # The last job's result is on its way into the pipe.
        time.sleep(0.2)

        source.poll(0.05, dispatcher, sink)
        after_one_poll = sorted(sink.values)
        _poll_until(source, dispatcher, sink, lambda: dispatcher.in_flight == 0)
    finally:
        source.close()

    assert after_one_poll == [0]
    assert sink.values == {i: [jobs.square(i)] for i in range(20)}
