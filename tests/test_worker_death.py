"""Worker processes that die during a run: retries, WorkerDied records and intact results."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

import syncagg as sa
from syncagg.worker import WorkerSpec, worker_main
from tests import jobs

_MiB = 1024 * 1024

# Long-lived helpers that multiprocessing starts once per interpreter.
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _worker_processes(marker: str = "") -> list[psutil.Process]:
    """Return the live child processes that are workers, not multiprocessing helpers."""
    workers = []
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if any(helper in command for helper in _HELPERS) or marker not in command:
            continue
        workers.append(child)
    return workers


class WorkerKiller:
    """A thread that SIGKILLs a random worker after each random pause until it has killed ``planned``."""

    def __init__(self, planned: int, seed: int, pause: tuple[float, float]) -> None:
        self.planned = planned
        self.kills = 0
        self._pause = pause
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-worker-killer", daemon=True)

    @property
    def finished(self) -> bool:
        """Whether every planned kill has happened."""
        return self.kills >= self.planned

    def __enter__(self) -> WorkerKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self.finished and not self._stop.wait(self._random.uniform(*self._pause)):
            workers = _worker_processes()
            if not workers:
                continue
            try:
                # psutil checks that the pid still belongs to the same process.
                self._random.choice(workers).kill()
            except psutil.NoSuchProcess:
                continue
            self.kills += 1


class Numbers:
    """Yield 0, 1, 2, ... until ``minimum`` numbers are out and every planned kill has happened.

    Extending the inputs until the kills are done makes them land during
    the run however fast or slow the machine is. ``maximum`` bounds a run
    whose kills never finish.
    """

    def __init__(self, killer: WorkerKiller, minimum: int, maximum: int) -> None:
        self.killer = killer
        self.minimum = minimum
        self.maximum = maximum
        self.count = 0

    def __iter__(self) -> Iterator[int]:
        for x in range(self.maximum):
            if x >= self.minimum and self.killer.finished:
                return
            self.count += 1
            yield x


def _check_settled(summary: sa.RunSummary, ok_ids: list[int], count: int) -> None:
    """Assert that each of ``count`` jobs is either ok exactly once or failed with WorkerDied."""
    duplicated = [job_id for job_id, seen in Counter(ok_ids).items() if seen > 1]
    # The summary keeps only the first 100 failures, so the failed jobs are
    # counted as the complement of the ok ones.
    kept_failed_ids = [failure.job_id for failure in summary.failures]
    error_types = [failure.error.type if failure.error else None for failure in summary.failures]

    assert duplicated == []
    assert set(ok_ids) <= set(range(count))
    assert summary.counts["ok"] == len(ok_ids)
    assert summary.counts["failed"] == count - len(ok_ids)
    assert set(ok_ids).isdisjoint(kept_failed_ids)
    assert error_types == ["syncagg.WorkerDied"] * len(summary.failures)


def test_self_kill_fails_after_retry(tmp_path: Path) -> None:
    output = tmp_path / "rows.jsonl"
    aggregator = sa.Aggregator(outputs=[output], workers=2, progress=False)

    summary = aggregator.run(jobs.kill_self_on_13, range(100))

    expected = [jobs.square(x) for x in range(100) if x != 13]
    assert summary.counts["ok"] == 99
    assert summary.counts["failed"] == 1
    assert len(summary.failures) == 1
    failure = summary.failures[0]
    assert failure.job_id == 13
    assert failure.status is sa.Status.FAILED
    assert failure.error is not None
    assert failure.error.type == "syncagg.WorkerDied"
    assert "exited with signal 9" in failure.error.message
    assert failure.attempts == 2
    assert sorted(summary.value, key=lambda row: row["x"]) == expected
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(rows, key=lambda row: row["x"]) == expected


def test_self_kill_without_retries() -> None:
    aggregator = sa.Aggregator(workers=2, progress=False, retries=0)

    summary = aggregator.run(jobs.kill_self_on_13, range(100))

    assert summary.counts["ok"] == 99
    assert summary.counts["failed"] == 1
    assert len(summary.failures) == 1
    failure = summary.failures[0]
    assert failure.job_id == 13
    assert failure.error is not None
    assert failure.error.type == "syncagg.WorkerDied"
    assert "exited with signal 9" in failure.error.message
    assert failure.attempts == 1
    assert sorted(row["x"] for row in summary.value) == [x for x in range(100) if x != 13]


def test_random_kills_settle_every_job() -> None:
    with WorkerKiller(planned=6, seed=7, pause=(0.02, 0.1)) as killer:
        numbers = Numbers(killer, minimum=200, maximum=5_000)
        summary = sa.Aggregator(workers=2, progress=False).run(jobs.sleepy_square, numbers)

    assert killer.kills == 6
    ok_ids = [row["x"] for row in summary.value]
    _check_settled(summary, ok_ids, numbers.count)
    for row in summary.value:
        assert row["square"] == row["x"] * row["x"]


def test_kill_during_ring_write_keeps_arrays() -> None:
    # Each result is a 4 MiB message, and a region has room for two. The
    # consumer rebuilds and compares every array, so it is slower than the
    # workers and they block on a full region. Kills then land while a
    # worker waits for space, copies into the region or runs the function.
    delivered: list[int] = []
    mismatched: list[int] = []

    def check(result: sa.JobResult) -> None:
        delivered.append(result.job_id)
        expected = jobs.striped_array(result.job_id)
        value = result.value
        if value.dtype != expected.dtype or not np.array_equal(value, expected):
            mismatched.append(result.job_id)

    aggregator = sa.Aggregator(
        strategy=sa.Stream(check),
        workers=2,
        progress=False,
        ring_size=2 * 9 * _MiB,
    )
    with WorkerKiller(planned=5, seed=11, pause=(0.01, 0.06)) as killer:
        numbers = Numbers(killer, minimum=40, maximum=1_000)
        summary = aggregator.run(jobs.striped_array, numbers)

    assert killer.kills == 5
    assert mismatched == []
    _check_settled(summary, delivered, numbers.count)


def test_kill_before_ready_replaces_worker() -> None:
    # A spawned worker imports numpy and syncagg before it reports ready, so
    # a SIGKILL sent within milliseconds of its appearance lands before that.
    killed: list[int] = []
    stop = threading.Event()

    def kill_first_worker() -> None:
        while not stop.wait(0.001):
            workers = _worker_processes(marker="spawn_main")
            if workers:
                workers[0].kill()
                killed.append(workers[0].pid)
                return

    thread = threading.Thread(target=kill_first_worker, name="test-early-killer", daemon=True)
    thread.start()
    try:
        aggregator = sa.Aggregator(workers=2, progress=False, start_method="spawn")
        summary = aggregator.run(jobs.square, range(50))
    finally:
        stop.set()
        thread.join()

    assert len(killed) == 1
    assert summary.counts["ok"] == 50
    assert summary.counts["failed"] == 0
    assert sorted(row["x"] for row in summary.value) == list(range(50))


def test_input_that_fails_to_load_fails_its_job() -> None:
    aggregator = sa.Aggregator(strategy=sa.Collect(), workers=2, progress=False, chunksize=1)
    inputs = [1, 2, jobs.Unloadable(), 4, 5]
    summary = aggregator.run(jobs.identity, inputs)

    assert sorted(summary.value) == [1, 2, 4, 5]
    assert summary.counts["failed"] == 1
    failure = summary.failures[0]
    assert failure.job_id == 2
    assert failure.error is not None
    assert "could not unpickle the inputs it was sent" in failure.error.message


@pytest.mark.parametrize("batch_bytes", [1, 1 << 20])
def test_result_that_fails_to_load_fails_its_batch(batch_bytes: int) -> None:
    aggregator = sa.Aggregator(
        strategy=sa.Collect(), workers=2, progress=False, chunksize=1, batch_bytes=batch_bytes
    )
    summary = aggregator.run(jobs.unloadable_on_3, range(8))

    failed = {failure.job_id for failure in summary.failures}
    assert 3 in failed
    assert sorted(summary.value) == sorted(set(range(8)) - failed)
    assert summary.counts == {**summary.counts, "ok": 8 - len(failed), "failed": len(failed)}
    for failure in summary.failures:
        assert failure.error is not None
        assert failure.error.type == "syncagg.UndecodableResult"
        assert "does not unpickle in the parent" in failure.error.message
        assert "this input cannot be rebuilt in a worker" in failure.error.message
    if batch_bytes == 1:
        # One result per batch: only the job whose result does not load fails.
        assert failed == {3}


def test_death_noticed_while_fork_lives(tmp_path: Path) -> None:
    aggregator = sa.Aggregator(strategy=sa.Collect(), workers=2, progress=False, retries=0, chunksize=1)
    try:
        summary = aggregator.run(jobs.fork_then_die, [(str(tmp_path), x) for x in range(8)])
    finally:
        grandchild = int((tmp_path / "grandchild").read_text())
        os.kill(grandchild, signal.SIGKILL)

    assert sorted(summary.value) == [0, 1, 2, 4, 5, 6, 7]
    assert [f.job_id for f in summary.failures] == [3]


def test_stop_not_delayed_by_forked_child(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A child that a job forked keeps its worker's sentinel pipe open after
    # the worker exits, so a stop that waited on the pipe took its full
    # timeout and then reported the worker as stuck.
    aggregator = sa.Aggregator(strategy=sa.Collect(), workers=2, progress=False, chunksize=1)
    try:
        with caplog.at_level(logging.WARNING, logger="syncagg"):
            summary = aggregator.run(jobs.fork_and_return, [(str(tmp_path), x) for x in range(8)])
    finally:
        grandchild = int((tmp_path / "grandchild").read_text())
        os.kill(grandchild, signal.SIGKILL)

    assert sorted(summary.value) == list(range(8))
    assert [record.message for record in caplog.records if "did not stop" in record.message] == []


def test_dead_worker_segments_removed_at_replacement() -> None:
    # Job 3 leaves an unannounced segment and kills its worker. Jobs after
    # it see the replacement's run, by when the segment must be gone.
    seen_after: list[list[str]] = []

    def check(result: sa.JobResult) -> None:
        if result.job_id >= 6:
            seen_after.append(sorted(p.name for p in Path("/dev/shm").glob(f"syncagg-{os.getpid()}-*-w*-99")))

    aggregator = sa.Aggregator(
        strategy=sa.Collect(), workers=1, progress=False, chunksize=1, retries=0, on_result=check
    )
    summary = aggregator.run(jobs.orphan_segment_then_die, range(10))

    assert [failure.job_id for failure in summary.failures] == [3]
    assert sorted(summary.value) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert seen_after == [[]] * 4


def test_result_that_exits_on_load_fails_its_job() -> None:
    aggregator = sa.Aggregator(strategy=sa.Collect(), workers=2, progress=False, batch_bytes=1)
    summary = aggregator.run(jobs.exit_on_load_on_3, range(8))

    assert sorted(summary.value) == [0, 1, 2, 4, 5, 6, 7]
    assert [failure.job_id for failure in summary.failures] == [3]
    error = summary.failures[0].error
    assert error is not None
    assert error.type == "syncagg.UndecodableResult"
    assert "SystemExit" in error.message


def test_exception_with_broken_str_fails_its_job() -> None:
    aggregator = sa.Aggregator(strategy=sa.Collect(), workers=1, progress=False)
    summary = aggregator.run(jobs.broken_str_on_2, range(5))

    assert sorted(summary.value) == [0, 1, 3, 4]
    assert [failure.job_id for failure in summary.failures] == [2]
    failure = summary.failures[0]
    assert failure.attempts == 1
    assert failure.error is not None
    assert failure.error.type == "tests.jobs.BrokenStr"
    assert failure.error.message == "<str() of the BrokenStr failed with RuntimeError>"


_NESTED_SCRIPT = """
import syncagg as sa
from syncagg.worker import WorkerSpec, worker_main
from tests import jobs
if __name__ == "__main__":
    summary = sa.Aggregator(workers=1, progress=False, chunksize=1).run(jobs.nested_lists, range(480, 490))
    print(summary.counts["ok"], sorted({f.error.type for f in summary.failures}))
"""


def test_values_near_recursion_limit_fail_alone() -> None:
    # In a fresh interpreter, some of these depths pickle alone but not a
    # few levels down inside their batch. That used to kill the worker
    # (WorkerDied); now each value arrives or fails as unpicklable.
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", _NESTED_SCRIPT], cwd=root, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    ok, types = result.stdout.split(" ", 1)
    assert types.strip() == "['syncagg.UnpicklableResult']"
    assert int(ok) >= 5


def test_worker_whose_parent_is_gone_exits() -> None:
    # A worker started just before its parent died gets another parent
    # (init or a subreaper) and must exit, or it waits forever for jobs.
    spec = WorkerSpec(
        fn=abs, slot=0, ring_name="unused", capacity=0, start=0, tasks=None, results=None,  # type: ignore[arg-type]
        batch_bytes=1, batch_latency=1.0, segment_prefix="unused", parent_pid=1,
    )
    process = multiprocessing.get_context("fork").Process(target=worker_main, args=(spec,))
    process.start()
    process.join(timeout=30)

    assert process.exitcode == 70
