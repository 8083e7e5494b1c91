"""Large buffers in results lent as views of the ring, with real workers.

A strategy that drops each value once it has handled it (``Reduce``,
``Combine``) receives large arrays as views of the worker's ring region
instead of copies. These tests check that such values are views, that
everything else still owns its memory, and that views the strategy keeps
neither stall the workers nor get overwritten, also across a worker's death.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import syncagg as sa
from tests import transport_jobs

_MiB = 1024 * 1024
COUNT = 120


def _lent(array: np.ndarray) -> bool:
    """Return whether ``array`` is built on memory the parent lent out."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, pa.Buffer)


def _expected(x: int) -> np.ndarray:
    return np.arange(x, x + transport_jobs.LENT_LENGTH, dtype=np.float64)


def _ramp_total(count: int) -> float:
    length = transport_jobs.LENT_LENGTH
    return float(sum(x * length + length * (length - 1) // 2 for x in range(count)))


class _Checker:
    """A fold that checks each array against its expected content."""

    def __init__(self) -> None:
        self.lent: list[bool] = []
        self.wrong: list[float] = []

    def __call__(self, total: float, value: np.ndarray) -> float:
        self.lent.append(_lent(value))
        if not np.array_equal(value, _expected(int(value[0]))):
            self.wrong.append(float(value[0]))
        return total + float(value.sum())


def test_reduce_receives_lent_views() -> None:
    checker = _Checker()
    aggregator = sa.Aggregator(strategy=sa.Reduce(checker, 0.0), workers=2, progress=False)

    summary = aggregator.run(transport_jobs.lent_ramp, range(COUNT))

    assert summary.value == _ramp_total(COUNT)
    assert checker.wrong == []
    assert checker.lent == [True] * COUNT


def test_shared_arrays_are_lent_too() -> None:
    checker = _Checker()
    aggregator = sa.Aggregator(strategy=sa.Reduce(checker, 0.0), workers=2, progress=False)

    summary = aggregator.run(transport_jobs.lent_ramp_shared, range(COUNT))

    assert summary.value == _ramp_total(COUNT)
    assert checker.wrong == []
    assert checker.lent == [True] * COUNT


def test_small_arrays_are_copied() -> None:
    # 8 KB arrays: below the lending size a copy is cheaper.
    lent = []

    def fold(total: float, value: np.ndarray) -> float:
        lent.append(_lent(value))
        return total + float(value[0])

    aggregator = sa.Aggregator(strategy=sa.Reduce(fold, 0.0), workers=2, progress=False)
    summary = aggregator.run(transport_jobs.ramp, range(50))

    assert summary.value == float(sum(range(50)))
    assert lent == [False] * 50


def test_collected_values_own_their_memory() -> None:
    aggregator = sa.Aggregator(strategy=sa.Collect(), workers=2, progress=False)

    summary = aggregator.run(transport_jobs.lent_ramp, range(40))

    assert sorted(int(value[0]) for value in summary.value) == list(range(40))
    assert [_lent(value) for value in summary.value] == [False] * 40


def test_writers_get_copies(tmp_path: Path) -> None:
    # A writer thread keeps values until it has written them, so a run with
    # an output does not lend.
    lent = []

    def fold(total: float, value: dict[str, Any]) -> float:
        lent.append(_lent(value["a"]))
        return total + 1

    output = tmp_path / "rows.jsonl"
    aggregator = sa.Aggregator(
        strategy=sa.Reduce(fold, 0.0), workers=2, progress=False, outputs=[str(output)]
    )
    summary = aggregator.run(transport_jobs.lent_row, range(10))

    assert summary.value == 10.0
    assert lent == [False] * 10
    assert len(output.read_text().splitlines()) == 10


def test_kept_views_do_not_stall_workers(caplog: pytest.LogCaptureFixture) -> None:
    # Every value is kept, 15 MiB in all, with 1 MiB regions: once the kept
    # views fill a region its worker sends each batch in a segment of its
    # own instead of waiting for bytes that are never freed.
    count = 120
    kept: list[np.ndarray] = []

    def keep(total: float, value: np.ndarray) -> float:
        kept.append(value)
        return total + float(value[0])

    aggregator = sa.Aggregator(
        strategy=sa.Reduce(keep, 0.0), workers=2, progress=False, ring_size=2 * _MiB
    )
    with caplog.at_level(logging.INFO, logger="syncagg"):
        summary = aggregator.run(transport_jobs.lent_ramp, range(count))

    assert summary.value == float(sum(range(count)))
    # Read after the run, when the ring segment is unlinked: the views keep
    # its mapping, and no later batch overwrote them.
    firsts = [int(value[0]) for value in kept]
    assert sorted(firsts) == list(range(count))
    assert all(np.array_equal(value, _expected(x)) for x, value in zip(firsts, kept, strict=True))
    assert any(_lent(value) for value in kept)
    # Said once, not once per batch.
    assert len([r for r in caplog.records if "still referenced" in r.getMessage()]) == 1


def test_accumulator_that_is_a_value_outlives_the_run() -> None:
    # The accumulator ends as the last lent view; it stays valid after the run.
    aggregator = sa.Aggregator(
        strategy=sa.Reduce(_latest, None), workers=2, progress=False, ring_size=2 * _MiB
    )
    summary = aggregator.run(transport_jobs.lent_ramp, range(60))

    value = summary.value
    assert np.array_equal(value, _expected(int(value[0])))
    value[:] = 0.0
    assert float(value.sum()) == 0.0


def _latest(_: Any, value: np.ndarray) -> np.ndarray:
    return value


def test_lent_views_survive_a_worker_kill(tmp_path: Path) -> None:
    # The last 20 values stay alive in a window while a worker is SIGKILLed
    # at input 30. Its replacement writes after the last message read, so
    # the views before it keep their content.
    window: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=20)
    wrong = []

    def keep_window(total: float, value: np.ndarray) -> float:
        # Each kept view is compared with the input it came from: an
        # overwrite by a later result would still look like some ramp.
        for x, kept in window:
            if not np.array_equal(kept, _expected(x)):
                wrong.append(x)
        window.append((int(value[0]), value))
        return total + float(value[0])

    marker = str(tmp_path / "killed")
    count = 200
    aggregator = sa.Aggregator(
        strategy=sa.Reduce(keep_window, 0.0), workers=2, progress=False, ring_size=16 * _MiB, chunksize=4
    )
    summary = aggregator.run(transport_jobs.lent_ramp_kill_once, [(marker, x) for x in range(count)])

    assert Path(marker).exists()
    assert summary.counts["ok"] == count
    assert summary.value == float(sum(range(count)))
    assert wrong == []


def test_combine_of_arrays_is_lent() -> None:
    aggregator = sa.Aggregator(strategy=sa.Combine(sa.ArraySum()), workers=2, progress=False)

    summary = aggregator.run(transport_jobs.lent_ramp, range(COUNT))

    expected = sum(_expected(x) for x in range(COUNT))
    assert np.array_equal(summary.value, expected)
    assert not _lent(summary.value)


def test_worker_accumulators_are_not_lent(caplog: pytest.LogCaptureFixture) -> None:
    # A merge adopts a group's first accumulator and adds into it later, so
    # accumulators folded in workers arrive as copies, and no region is held.
    combiner = sa.GroupBy("group", sa.ArraySum("a"))
    aggregator = sa.Aggregator(strategy=sa.Combine(combiner, in_workers=True), workers=2, progress=False)

    with caplog.at_level(logging.INFO, logger="syncagg"):
        summary = aggregator.run(transport_jobs.grouped_ramp, range(40))

    assert set(summary.value) == {0, 1}
    for group in (0, 1):
        expected = sum(_expected(x) for x in range(group, 40, 2))
        assert np.array_equal(summary.value[group], expected)
    assert [r for r in caplog.records if "still referenced" in r.getMessage()] == []
