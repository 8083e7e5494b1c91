"""Threads, executors the caller owns, and futures the caller submitted."""

from __future__ import annotations

import operator
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import syncagg as sa
from tests import jobs

COUNT = 200
EXPECTED = sum(x * x for x in range(COUNT) if x % 7 != 0)


def test_threads_run_in_this_process(tmp_path: Path) -> None:
    names: set[str] = set()

    def record(x: int) -> dict[str, int]:
        names.add(threading.current_thread().name)
        return jobs.fail_on_multiples_of_seven(x)

    aggregator = sa.Aggregator(
        strategy=sa.Reduce(jobs.add_square, 0),
        outputs=[tmp_path / "rows.parquet"],
        workers=sa.Threads(4),
        progress=False,
    )
    summary = aggregator.run(record, range(COUNT))

    assert summary.value == EXPECTED
    assert summary.counts["failed"] == len(range(0, COUNT, 7))
    assert pq.read_table(tmp_path / "rows.parquet").num_rows == COUNT - len(range(0, COUNT, 7))
    assert names and all(name.startswith("syncagg-thread") for name in names)


@pytest.mark.parametrize("executor_type", [ThreadPoolExecutor, ProcessPoolExecutor], ids=["threads", "processes"])
def test_owned_executor(executor_type: type) -> None:
    with executor_type(2) as executor:
        aggregator = sa.Aggregator(strategy=sa.Reduce(jobs.add_square, 0), executor=executor, progress=False)
        summary = aggregator.run(jobs.fail_on_multiples_of_seven, range(COUNT))

        assert summary.value == EXPECTED
        assert summary.counts["ok"] == COUNT - len(range(0, COUNT, 7))
        assert executor.submit(operator.add, 1, 2).result() == 3


def test_collect_futures() -> None:
    with ThreadPoolExecutor(4) as executor:
        futures = [executor.submit(jobs.fail_on_multiples_of_seven, x) for x in range(COUNT)]
        summary = sa.Aggregator(strategy=sa.Reduce(jobs.add_square, 0), progress=False).collect(futures)

    assert summary.value == EXPECTED
    assert summary.counts["failed"] == len(range(0, COUNT, 7))
    failure = summary.failures[0]
    assert failure.error is not None
    assert failure.error.type == "ValueError"
    assert failure.error.message == "0 is a multiple of 7"


def test_collect_rejects_non_futures() -> None:
    aggregator = sa.Aggregator(progress=False)
    with pytest.raises(TypeError, match=r"collect\(\) takes concurrent.futures.Future objects, got 3"):
        aggregator.collect([3])  # type: ignore[list-item]


def test_collect_resumes_from_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.sqlite"
    aggregator = sa.Aggregator(strategy=sa.Collect(), checkpoint=checkpoint, progress=False)
    first = aggregator.collect(_done_futures(range(5)))
    second = aggregator.collect(_done_futures(range(5)))

    assert sorted(first.value) == [0, 1, 2, 3, 4]
    assert second.value == first.value
    assert second.counts["resumed"] == 5


def test_threads_and_executor_conflict() -> None:
    with ThreadPoolExecutor(1) as executor, pytest.raises(ValueError, match="not both"):
        sa.Aggregator(workers=sa.Threads(2), executor=executor)


def test_bad_executor_type() -> None:
    with pytest.raises(TypeError, match=r"executor must be a concurrent.futures.Executor"):
        sa.Aggregator(executor="pool")


def _done_futures(values: range) -> list[Future[int]]:
    futures = []
    for value in values:
        future: Future[int] = Future()
        future.set_result(value)
        futures.append(future)
    return futures
