"""Reduce(ordered=True) folds in input order through real workers, gaps included."""

from __future__ import annotations

import operator
from pathlib import Path

import pytest

import syncagg as sa
from syncagg.strategies import InputOrder
from tests import combine_jobs

COUNT = 400
EXPECTED = "".join(f"{x}," for x in range(COUNT))
EXPECTED_WITHOUT_SEVENS = "".join(f"{x}," for x in range(COUNT) if x % 7 != 0)


def _aggregator(**settings: object) -> sa.Aggregator:
    strategy = sa.Reduce(operator.add, "", ordered=True, **settings)  # type: ignore[arg-type]
    return sa.Aggregator(strategy=strategy, workers=2, progress=False, chunksize=8)


def test_ordered_concatenation_matches_sequential() -> None:
    summary = _aggregator().run(combine_jobs.text, range(COUNT))
    assert summary.value == EXPECTED


def test_failed_jobs_leave_no_gap() -> None:
    summary = _aggregator().run(combine_jobs.text_failing_on_sevens, range(COUNT))
    assert summary.value == EXPECTED_WITHOUT_SEVENS
    assert summary.counts["failed"] == len(range(0, COUNT, 7))


def test_small_buffer_still_completes() -> None:
    summary = _aggregator(max_buffered=2).run(combine_jobs.text, range(COUNT))
    assert summary.value == EXPECTED


def test_filtered_jobs_leave_no_gap() -> None:
    pipeline = sa.Pipeline(in_workers=True).where(_not_multiple_of_three)
    strategy = sa.Reduce(operator.add, "", ordered=True)
    aggregator = sa.Aggregator(strategy=strategy, workers=2, progress=False, pipeline=pipeline)
    summary = aggregator.run(combine_jobs.text, range(COUNT))
    assert summary.value == "".join(f"{x}," for x in range(COUNT) if x % 3 != 0)


def _not_multiple_of_three(text: str) -> bool:
    return int(text.rstrip(",")) % 3 != 0


def test_ordered_resumes_after_input_error(tmp_path: Path) -> None:
    def broken_inputs():  # type: ignore[no-untyped-def]
        yield from range(150)
        raise OSError("disk gone")

    strategy = sa.Reduce(operator.add, "", ordered=True)
    aggregator = sa.Aggregator(
        strategy=strategy, workers=2, progress=False, chunksize=8, checkpoint=tmp_path / "run.sqlite"
    )
    with pytest.raises(sa.InputError, match="disk gone"):
        aggregator.run(combine_jobs.text_failing_on_sevens, broken_inputs())
    summary = aggregator.run(combine_jobs.text_failing_on_sevens, (x for x in range(COUNT)))

    assert summary.value == EXPECTED_WITHOUT_SEVENS
    assert summary.counts["resumed"] == 150


def test_unordered_reduce_keeps_fingerprint() -> None:
    assert sa.Reduce(operator.add, "").describe() == "Reduce(_operator.add, '')"
    assert sa.Reduce(operator.add, "", ordered=True).describe() == "Reduce(_operator.add, '', ordered=True)"


def test_input_order_releases_runs() -> None:
    order = InputOrder()
    order.put(2, "c")
    order.skip([1])
    assert order.take_ready() == []
    order.put(0, "a")
    assert order.take_ready() == ["a", "c"]
    assert order.next_id == 3
    assert len(order) == 0


def test_input_order_state_round_trip() -> None:
    order = InputOrder()
    order.put(1, "b")
    order.skip([2])
    copy = InputOrder()
    copy.restore(order.state())
    copy.put(0, "a")
    assert copy.take_ready() == ["a", "b"]
    assert copy.next_id == 3


def test_bad_max_buffered_raises() -> None:
    with pytest.raises(ValueError, match=r"Reduce\(max_buffered=...\) must be a positive int, got 0"):
        sa.Reduce(operator.add, "", ordered=True, max_buffered=0)


def test_worker_death_leaves_no_gap() -> None:
    # Job 13 kills its worker twice, so it fails with WorkerDied; a buffer
    # of two values makes the run loop hold back new chunks meanwhile.
    summary = _aggregator(max_buffered=2).run(combine_jobs.text_killing_on_13, range(60))
    assert summary.value == "".join(f"{x}," for x in range(60) if x != 13)
    assert summary.counts["failed"] == 1
    assert summary.failures[0].error is not None
    assert summary.failures[0].error.type == "syncagg.WorkerDied"
