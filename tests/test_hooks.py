"""on_result and on_error hooks run in the collector thread; a raising hook stops the run."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import syncagg as sa
from tests import combine_jobs, jobs

COUNT = 200
FAILED = list(range(0, COUNT, 7))


def test_hooks_see_each_result() -> None:
    ok: list[sa.JobResult] = []
    failed: list[sa.JobResult] = []
    threads: set[str] = set()

    def on_result(result: sa.JobResult) -> None:
        threads.add(threading.current_thread().name)
        ok.append(result)

    aggregator = sa.Aggregator(workers=2, progress=False, on_result=on_result, on_error=failed.append)
    aggregator.run(jobs.fail_on_multiples_of_seven, range(COUNT))

    assert sorted(result.job_id for result in ok) == [x for x in range(COUNT) if x % 7 != 0]
    assert all(result.value == jobs.square(result.job_id) for result in ok)
    assert sorted(result.job_id for result in failed) == FAILED
    assert all(result.error is not None and result.error.type == "ValueError" for result in failed)
    assert threads == {"syncagg-collector"}


def test_hooks_after_pipeline() -> None:
    values: list[int] = []
    pipeline = sa.Pipeline(in_workers=True).where(combine_jobs.even).map(_x)
    aggregator = sa.Aggregator(workers=2, progress=False, pipeline=pipeline, on_result=lambda r: values.append(r.value))
    aggregator.run(combine_jobs.row, range(20))
    assert sorted(values) == list(range(0, 20, 2))


def _x(row: dict[str, int]) -> int:
    return row["x"]


def test_on_result_error_stops_run(tmp_path: Path) -> None:
    aggregator = sa.Aggregator(
        workers=2, progress=False, outputs=[tmp_path / "rows.jsonl"], on_result=_fail_on_five
    )
    with pytest.raises(
        sa.HookError,
        match=r"the on_result hook tests.test_hooks._fail_on_five raised ValueError: five on job 5 \(5\); "
        r"the run stopped",
    ) as caught:
        aggregator.run(jobs.square, range(COUNT))
    assert isinstance(caught.value.__cause__, ValueError)
    assert os.listdir(tmp_path) == []


def _fail_on_five(result: sa.JobResult) -> None:
    if result.job_id == 5:
        raise ValueError("five")


def test_on_error_error_stops_run() -> None:
    aggregator = sa.Aggregator(workers=sa.Threads(2), progress=False, on_error=_reject)
    with pytest.raises(sa.HookError, match=r"the on_error hook tests.test_hooks._reject raised KeyError"):
        aggregator.run(jobs.fail_on_multiples_of_seven, range(COUNT))


def _reject(result: sa.JobResult) -> None:
    raise KeyError(result.key)


def test_hook_error_in_stream() -> None:
    aggregator = sa.Aggregator(workers=2, progress=False, on_result=_fail_on_five)
    with pytest.raises(sa.HookError, match=r"on_result hook"):
        for _ in aggregator.stream(jobs.square, range(COUNT)):
            pass


def test_hook_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"on_error must be callable or None, got 'log'"):
        sa.Aggregator(on_error="log")  # type: ignore[arg-type]
