"""Aggregator.stream: results as they arrive, backpressure, early stops and resume.

The fixtures in conftest.py fail a test that leaves a process, a syncagg
thread or a segment behind, so each early-stop test also checks cleanup.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

import syncagg as sa
from syncagg.interrupts import Termination
from syncagg.streaming import Handoff
from tests import combine_jobs, jobs
from tests.checkpoints import done_jobs

ROOT = Path(__file__).resolve().parent.parent
COUNT = 300
# Jobs of tests.stream_run: 5 ms each, so two workers take over a second.
STREAM_COUNT = 600


def _aggregator(**settings: object) -> sa.Aggregator:
    return sa.Aggregator(workers=2, progress=False, **settings)  # type: ignore[arg-type]


def test_stream_yields_every_result() -> None:
    stream = _aggregator().stream(jobs.fail_on_multiples_of_seven, range(COUNT))
    results = list(stream)

    assert sorted(result.job_id for result in results) == list(range(COUNT))
    failed = {result.job_id for result in results if result.status is sa.Status.FAILED}
    assert failed == set(range(0, COUNT, 7))
    assert all(result.value == jobs.square(result.job_id) for result in results if result.ok)
    assert stream.summary is not None
    assert stream.summary.counts["ok"] == COUNT - len(failed)


def test_stream_feeds_strategy_and_outputs(tmp_path: Path) -> None:
    aggregator = _aggregator(strategy=sa.Reduce(jobs.add_square, 0), outputs=[tmp_path / "rows.jsonl"])
    with aggregator.stream(jobs.square, range(COUNT)) as stream:
        seen = [result.job_id for result in stream]

    assert sorted(seen) == list(range(COUNT))
    assert stream.summary is not None
    assert stream.summary.value == sum(x * x for x in range(COUNT))
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert sorted(row["x"] for row in rows) == list(range(COUNT))


def test_break_stops_run() -> None:
    taken = []
    for result in _aggregator().stream(combine_jobs.slow_square, range(2000)):
        taken.append(result)
        break
    assert len(taken) == 1


def test_exception_stops_run() -> None:
    def consume() -> None:
        for _ in _aggregator().stream(combine_jobs.slow_square, range(2000)):
            raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        consume()


def test_garbage_collection_stops_run() -> None:
    stream = _aggregator().stream(combine_jobs.slow_square, range(2000))
    next(stream)
    del stream
    gc.collect()


def test_close_then_next_stops() -> None:
    stream = _aggregator().stream(combine_jobs.slow_square, range(2000))
    next(stream)
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)
    assert stream.summary is None


def test_close_before_first_result() -> None:
    stream = _aggregator().stream(combine_jobs.slow_square, range(2000))
    stream.close()
    stream.close()


def test_partial_outputs_removed_on_break(tmp_path: Path) -> None:
    aggregator = _aggregator(outputs=[tmp_path / "rows.jsonl"])
    for _ in aggregator.stream(combine_jobs.slow_square, range(2000)):
        break
    assert sorted(os.listdir(tmp_path)) == []


def test_slow_consumer_blocks_workers(tmp_path: Path) -> None:
    started = tmp_path / "started"
    started.mkdir()
    ahead = []

    # Results of 200 kB: each worker's 1 MiB region holds at most five, and
    # chunks of 100 would let the workers run far ahead unless blocked.
    aggregator = _aggregator(ring_size=2 * 1024 * 1024, batch_bytes=200_000, chunksize=100)
    inputs = [(str(started), x) for x in range(COUNT)]
    for consumed, _ in enumerate(aggregator.stream(jobs.mark_started, inputs, buffer_size=4), start=1):
        ahead.append(len(os.listdir(started)) - consumed)
        time.sleep(0.005)

    assert len(ahead) == COUNT
    # Four results wait in the stream; per worker five in the ring, one
    # being written and one running; one in the collector's hands.
    assert max(ahead) <= 4 + 2 * 7 + 1


def test_resume_delivers_unconsumed(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.sqlite"
    aggregator = _aggregator(
        checkpoint=checkpoint, outputs=[tmp_path / "rows.jsonl"], checkpoint_results=10, checkpoint_seconds=0.05
    )
    first = []
    for result in aggregator.stream(jobs.square, range(COUNT), buffer_size=8):
        first.append(result.job_id)
        if len(first) == 100:
            break

    stream = aggregator.stream(jobs.square, range(COUNT))
    second = [result.job_id for result in stream]

    assert stream.summary is not None
    resumed = stream.summary.counts["resumed"]
    assert len(second) == COUNT - resumed
    # A job that the checkpoint records as done was consumed before the stop.
    assert set(range(COUNT)) - set(second) <= set(first)
    assert set(first) | set(second) == set(range(COUNT))
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert sorted(row["x"] for row in rows) == list(range(COUNT))


def test_strategy_error_raised_from_loop() -> None:
    aggregator = _aggregator(strategy=sa.Reduce(_fail_on_ten, 0))
    seen = []
    with pytest.raises(sa.StrategyError, match=r"Reduce\(tests.test_stream._fail_on_ten, 0\) raised ValueError: ten"):
        for result in aggregator.stream(jobs.square, range(COUNT)):
            seen.append(result.job_id)
    assert 10 not in seen


def _fail_on_ten(total: int, row: dict[str, int]) -> int:
    if row["x"] == 10:
        raise ValueError("ten")
    return total + row["x"]


def test_stream_after_pipeline() -> None:
    pipeline = sa.Pipeline().where(status="failed")
    stream = _aggregator(pipeline=pipeline).stream(jobs.fail_on_multiples_of_seven, range(COUNT))
    ids = [result.job_id for result in stream]
    assert sorted(ids) == list(range(0, COUNT, 7))
    assert stream.summary is not None
    assert stream.summary.counts["filtered_out"] == COUNT - len(ids)


def test_bad_buffer_size_raises() -> None:
    with pytest.raises(ValueError, match=r"buffer_size must be a positive int, got 0"):
        _aggregator().stream(jobs.square, range(3), buffer_size=0)


def test_stream_restores_sigterm_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    finished = _aggregator().stream(jobs.square, range(10))
    during = signal.getsignal(signal.SIGTERM)
    list(finished)
    after_end = signal.getsignal(signal.SIGTERM)
    closed = _aggregator().stream(combine_jobs.slow_square, range(2000))
    next(closed)
    closed.close()

    assert during != before
    assert after_end == before
    assert signal.getsignal(signal.SIGTERM) == before


class _FakeLoop:
    """Record the calls that a Termination makes on a run loop."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_stop(self, drain: bool = False) -> None:
        self.calls.append(f"request_stop(drain={drain})")

    def terminate(self) -> None:
        self.calls.append("terminate")


def test_sigterm_before_attach_stops_loop() -> None:
    termination = Termination()
    loop = _FakeLoop()
    termination.install()
    try:
        assert signal.getsignal(signal.SIGTERM) == termination._handle
        signal.raise_signal(signal.SIGTERM)
        termination.attach(loop)  # type: ignore[arg-type]
        signal.raise_signal(signal.SIGTERM)
        termination.detach()
    finally:
        termination.uninstall()

    assert termination.requested.is_set()
    assert loop.calls == ["request_stop(drain=True)", "terminate"]
    assert signal.getsignal(signal.SIGTERM) != termination._handle


def _terminate_after(process: subprocess.Popen[bytes], count: int) -> list[int]:
    """Read ``count`` job ids, send SIGTERM, wait, and return every id the stream printed."""
    assert process.stdout is not None
    ids = []
    while len(ids) < count:
        line = process.stdout.readline()
        assert line, "the stream ended before the test could stop it"
        ids.append(int(line))
    workers = psutil.Process(process.pid).children()
    process.send_signal(signal.SIGTERM)
    # Read through the same buffered reader as readline, which may hold more lines.
    ids += [int(line) for line in process.stdout.read().split()]
    process.wait(timeout=60)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []
    return ids


@pytest.mark.timeout(300)
def test_sigterm_stops_stream_then_resumes(tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "tests.stream_run", str(tmp_path), str(STREAM_COUNT)]
    with log.open("wb") as stderr_file:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr_file)
        try:
            first = _terminate_after(process, 50)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
    stderr = log.read_text()

    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert "stopped by SIGTERM after a last checkpoint" in stderr
    assert len(set(first)) == len(first)
    # The last checkpoint waited for the loop to take every result collected.
    assert done_jobs(tmp_path / "run.sqlite") == len(first)
    assert not (tmp_path / "rows.jsonl").exists()

    second = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=120, check=False)

    assert second.returncode == 0, second.stderr.decode()
    rest = [int(line) for line in second.stdout.split()]
    assert sorted(first + rest) == list(range(STREAM_COUNT))
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert sorted(row["x"] for row in rows) == list(range(STREAM_COUNT))


def test_open_stream_at_exit_does_not_hang() -> None:
    # The stream stays referenced by a module-level name when the script
    # ends. Its workers ignore the SIGTERM that multiprocessing's exit
    # handler sends, so only closing the stream at exit lets the process end.
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.stream_exit_run"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.communicate()
        raise

    assert process.returncode == 0, stderr.decode()
    assert stdout.decode() == "leaving\n"
    assert b"leaked shared_memory" not in stderr


def _result(job_id: int, value: Any) -> sa.JobResult:
    return sa.JobResult(job_id, str(job_id), sa.Status.OK, value, None, 0, 0.0, 0.0)


def test_handoff_bounds_bytes_waiting() -> None:
    # Two 4 MiB arrays fill 10 MiB of room; the third waits for the consumer.
    handoff = Handoff(1000, 10 * 1024 * 1024)
    arrays = [np.full(512 * 1024, float(i)) for i in range(3)]
    put = threading.Thread(target=lambda: [handoff.put(_result(i, a)) for i, a in enumerate(arrays)])
    put.start()

    put.join(0.5)
    assert put.is_alive()
    first = handoff.get()
    put.join(10)
    assert not put.is_alive()
    assert first is not None
    assert first.job_id == 0
    taken = [handoff.get(), handoff.get()]
    assert [result.job_id for result in taken if result is not None] == [1, 2]


def test_handoff_lets_one_large_result_through() -> None:
    handoff = Handoff(1000, 1024)
    handoff.put(_result(0, np.zeros(1024 * 1024)))

    taken = handoff.get()

    assert taken is not None
    assert taken.job_id == 0


def test_stream_of_large_arrays_with_small_byte_buffer() -> None:
    aggregator = sa.Aggregator(workers=2, progress=False)
    values = []
    with aggregator.stream(jobs.striped_array, range(12), buffer_bytes=4 * 1024 * 1024) as stream:
        for result in stream:
            values.append((result.job_id, result.value.nbytes))

    assert sorted(job_id for job_id, _ in values) == list(range(12))
    assert {nbytes for _, nbytes in values} == {jobs.striped_array(0).nbytes}


def test_bad_buffer_bytes_raises() -> None:
    with pytest.raises(ValueError, match="buffer_bytes"):
        sa.Aggregator(progress=False).stream(jobs.square, range(3), buffer_bytes=0)

