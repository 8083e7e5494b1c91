"""Combine through real workers, folding in the collector and in the workers."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import syncagg as sa
import syncagg.pool
from tests import combine_jobs, jobs

COUNT = 600
OK = [x for x in range(COUNT) if x % 7 != 0]
ROWS = [combine_jobs.row(x) for x in OK]

COMBINERS = {
    "sum": sa.Sum("lines"),
    "mean": sa.Mean("ratio"),
    "group-sum": sa.GroupBy("group", sa.Sum("lines")),
    "topk": sa.TopK(5, key="ratio"),
    "histogram": sa.Histogram([0, 10, 20, 50], field="lines"),
    "distinct": sa.CountDistinct("lines"),
    "array-sum": sa.ArraySum("vector"),
}


def _expected(combiner: sa.Combiner) -> Any:
    return combiner.fold(ROWS)


def _same(actual: Any, expected: Any) -> bool:
    # TopK returns rows that hold numpy arrays, which == compares element-wise.
    if isinstance(expected, list):
        return [row["x"] for row in actual] == [row["x"] for row in expected]
    if hasattr(expected, "tolist"):
        return bool(actual.tolist() == expected.tolist())
    return bool(actual == expected)


@pytest.mark.parametrize("in_workers", [False, True], ids=["collector", "workers"])
@pytest.mark.parametrize("name", list(COMBINERS))
def test_combine_matches_sequential(name: str, in_workers: bool) -> None:
    combiner = COMBINERS[name]
    aggregator = sa.Aggregator(strategy=sa.Combine(combiner, in_workers=in_workers), workers=2, progress=False)
    summary = aggregator.run(combine_jobs.row_failing_on_sevens, range(COUNT))

    assert _same(summary.value, _expected(combiner))
    assert summary.counts["ok"] == len(OK)
    assert summary.counts["failed"] == COUNT - len(OK)
    assert summary.failures[0].error is not None
    assert summary.failures[0].error.type == "ValueError"


@pytest.mark.parametrize("in_workers", [False, True], ids=["collector", "workers"])
def test_combine_in_threads(in_workers: bool) -> None:
    combiner = sa.GroupBy("group", sa.Mean("ratio"))
    aggregator = sa.Aggregator(
        strategy=sa.Combine(combiner, in_workers=in_workers), workers=sa.Threads(3), progress=False
    )
    summary = aggregator.run(combine_jobs.row_failing_on_sevens, range(COUNT))
    assert summary.value == _expected(combiner)
    assert summary.counts["ok"] == len(OK)


def test_combine_in_process_executor() -> None:
    combiner = sa.Sum("lines")
    with ProcessPoolExecutor(2) as executor:
        aggregator = sa.Aggregator(
            strategy=sa.Combine(combiner, in_workers=True), executor=executor, progress=False
        )
        summary = aggregator.run(combine_jobs.row_failing_on_sevens, range(COUNT))
    assert summary.value == _expected(combiner)
    assert summary.counts["failed"] == COUNT - len(OK)


def test_combine_collects_futures() -> None:
    # collect() has no workers, so the collector folds even with in_workers=True.
    with ProcessPoolExecutor(2) as executor:
        futures = [executor.submit(combine_jobs.row, x) for x in OK]
        aggregator = sa.Aggregator(strategy=sa.Combine(sa.Sum("lines"), in_workers=True), progress=False)
        summary = aggregator.collect(futures)
    assert summary.value == sum(row["lines"] for row in ROWS)


def test_workers_ship_partials_only(monkeypatch: pytest.MonkeyPatch) -> None:
    received: dict[bool, int] = {}
    for in_workers in (False, True):
        sizes = _count_ring_bytes(monkeypatch)
        aggregator = sa.Aggregator(
            strategy=sa.Combine(sa.ArraySum(), in_workers=in_workers), workers=2, progress=False
        )
        summary = aggregator.run(combine_jobs.vector, range(200))
        assert summary.value.tolist() == [float(sum(range(200)))] * 2000
        received[in_workers] = sum(sizes)

    # 200 arrays of 16 kB against a few accumulators of 16 kB each.
    assert received[False] > 200 * 16_000
    assert received[True] < received[False] / 5


def _count_ring_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    decode = syncagg.pool.decode_message

    def counting(view: memoryview, *args: Any) -> Any:
        sizes.append(view.nbytes)
        return decode(view, *args)

    monkeypatch.setattr(syncagg.pool, "decode_message", counting)
    return sizes


def test_combine_resumes_after_input_error(tmp_path: Path) -> None:
    def broken_inputs():  # type: ignore[no-untyped-def]
        yield from range(300)
        raise OSError("disk gone")

    combiner = sa.GroupBy("group", sa.Sum("lines"))
    aggregator = sa.Aggregator(
        strategy=sa.Combine(combiner, in_workers=True),
        workers=2,
        progress=False,
        checkpoint=tmp_path / "run.sqlite",
    )
    with pytest.raises(sa.InputError, match="disk gone"):
        aggregator.run(combine_jobs.row_failing_on_sevens, broken_inputs())
    summary = aggregator.run(combine_jobs.row_failing_on_sevens, (x for x in range(COUNT)))

    assert summary.value == _expected(combiner)
    assert summary.counts["resumed"] == 300
    assert summary.counts["ok"] == len(OK)


def test_worker_combiner_error_stops_run() -> None:
    aggregator = sa.Aggregator(strategy=sa.Combine(sa.Sum("size"), in_workers=True), workers=2, progress=False)
    with pytest.raises(sa.StrategyError, match=r"Combine\(Sum\(field='size'\), in_workers=True\) raised KeyError: .*"
                       r"no field 'size'.* in a worker, folding the value of job \d+"):
        aggregator.run(jobs.square, range(50))


def test_collector_combiner_error_stops_run() -> None:
    aggregator = sa.Aggregator(strategy=sa.Combine(sa.Sum("size")), workers=2, progress=False)
    with pytest.raises(sa.StrategyError, match=r"Combine\(Sum\(field='size'\)\) raised KeyError"):
        aggregator.run(jobs.square, range(50))


def test_worker_combine_rejects_outputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"outputs \(.*rows.jsonl\) need one row per job, but "
                       r"Combine\(Sum\(field='x'\), in_workers=True\) sends no per-job values"):
        sa.Aggregator(strategy=sa.Combine(sa.Sum("x"), in_workers=True), outputs=[tmp_path / "rows.jsonl"])


def test_worker_combine_rejects_on_result() -> None:
    with pytest.raises(ValueError, match=r"on_result needs each job's value.*use Combine\(Sum\(field='x'\)\)"):
        sa.Aggregator(strategy=sa.Combine(sa.Sum("x"), in_workers=True), on_result=print)


def test_worker_combine_rejects_stream() -> None:
    aggregator = sa.Aggregator(strategy=sa.Combine(sa.Count(), in_workers=True), workers=1, progress=False)
    with pytest.raises(ValueError, match=r"stream\(\) yields each job's value"):
        aggregator.stream(jobs.square, range(3))


def test_unpicklable_combiner_raises() -> None:
    combiner = sa.Sum(lambda row: row["x"])
    aggregator = sa.Aggregator(strategy=sa.Combine(combiner, in_workers=True), workers=1, progress=False)
    with pytest.raises(TypeError, match=r"folds in worker processes, but Sum\(field=.*<lambda>\) cannot be pickled"):
        aggregator.run(jobs.square, range(3))


def test_checkpoint_rejects_other_mode(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.sqlite"
    first = sa.Aggregator(strategy=sa.Combine(sa.Count()), workers=1, progress=False, checkpoint=checkpoint)
    first.run(jobs.square, range(5))
    second = sa.Aggregator(
        strategy=sa.Combine(sa.Count(), in_workers=True), workers=1, progress=False, checkpoint=checkpoint
    )
    with pytest.raises(sa.CheckpointMismatchError, match=r"strategy: checkpoint has 'Combine\(Count\(\)\)'"):
        second.run(jobs.square, range(5))


def test_combine_under_spawn() -> None:
    # Spawned workers import the combiner and the staged function by name.
    combiner = sa.GroupBy("group", sa.Sum("lines"))
    pipeline = sa.Pipeline(in_workers=True).where(status="ok")
    aggregator = sa.Aggregator(
        strategy=sa.Combine(combiner, in_workers=True),
        workers=2,
        progress=False,
        pipeline=pipeline,
        start_method="spawn",
    )
    summary = aggregator.run(combine_jobs.row_failing_on_sevens, range(COUNT))
    assert summary.value == _expected(combiner)
    assert summary.counts["filtered_out"] == COUNT - len(OK)
