"""Each strategy through real worker processes."""

from __future__ import annotations

import operator
from collections import Counter
from pathlib import Path

import pytest

import syncagg as sa
from tests import jobs

COUNT = 500


def _run(strategy: sa.Strategy, fn: object = jobs.square, count: int = COUNT) -> sa.RunSummary:
    return sa.Aggregator(strategy=strategy, workers=2, progress=False).run(fn, range(count))  # type: ignore[arg-type]


def test_collect_keeps_every_value() -> None:
    summary = _run(sa.Collect())
    assert sorted(row["x"] for row in summary.value) == list(range(COUNT))


def test_collect_ordered_keeps_input_order() -> None:
    summary = _run(sa.Collect(ordered=True))
    assert [row["x"] for row in summary.value] == list(range(COUNT))


def test_reduce_sums_squares() -> None:
    summary = _run(sa.Reduce(jobs.add_square, 0))
    assert summary.value == sum(x * x for x in range(COUNT))


def test_merge_counters() -> None:
    summary = _run(sa.Merge(operator.add), fn=jobs.parity_counter)
    assert summary.value == Counter(even=COUNT // 2, odd=COUNT // 2)


def test_merge_without_results_is_none() -> None:
    summary = _run(sa.Merge(operator.add), fn=jobs.always_fail, count=5)
    assert summary.value is None
    assert summary.counts["failed"] == 5


def test_stream_sees_each_result_once() -> None:
    seen: list[sa.JobResult] = []
    summary = _run(sa.Stream(seen.append))
    assert summary.value is None
    assert sorted(result.job_id for result in seen) == list(range(COUNT))
    assert all(result.status is sa.Status.OK for result in seen)
    assert all(result.key == str(result.job_id) for result in seen)
    assert all(result.started <= result.finished for result in seen)
    assert all(result.attempts == 1 for result in seen)


def test_failed_jobs_are_counted_not_collected() -> None:
    summary = _run(sa.Collect(), fn=jobs.fail_on_multiples_of_seven)
    failed = {x for x in range(COUNT) if x % 7 == 0}
    assert summary.counts == {"ok": COUNT - len(failed), "failed": len(failed), "resumed": 0}
    assert sorted(row["x"] for row in summary.value) == sorted(set(range(COUNT)) - failed)
    first = summary.failures[0]
    assert first.error is not None
    assert first.error.type == "ValueError"
    assert first.error.message == f"{first.job_id} is a multiple of 7"
    assert "raise ValueError" in first.error.traceback


def test_strategy_error_reaches_caller(tmp_path: Path) -> None:
    with pytest.raises(sa.StrategyError, match=r"Reduce\(_operator.truediv, 1.0\) raised TypeError"):
        _run(sa.Reduce(operator.truediv, 1.0))


def test_aggregator_runs_twice_from_scratch() -> None:
    aggregator = sa.Aggregator(strategy=sa.Reduce(jobs.add_square, 0), workers=2, progress=False)
    first = aggregator.run(jobs.square, range(10))
    second = aggregator.run(jobs.square, range(10))
    assert first.value == second.value == 285


def test_input_error_after_partial_run() -> None:
    def inputs():  # type: ignore[no-untyped-def]
        yield from range(50)
        raise OSError("disk gone")

    seen: list[int] = []
    aggregator = sa.Aggregator(strategy=sa.Stream(lambda r: seen.append(r.job_id)), workers=2, progress=False)
    with pytest.raises(sa.InputError, match=r"reading the inputs failed with OSError: disk gone") as caught:
        aggregator.run(jobs.square, inputs())
    assert isinstance(caught.value.__cause__, OSError)
    assert sorted(seen) == list(range(50))
