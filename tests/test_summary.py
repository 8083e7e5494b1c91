"""What a run reports besides its value: rows the outputs rejected, and failed jobs in the log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import syncagg as sa
from syncagg.cli import format_summary
from tests import jobs

COUNT = 30
# Rows with a key outside the CSV output's declared columns, which it rejects.
REJECTED = [x for x in range(COUNT) if x % 3 == 0]


class _Records(logging.Handler):
    """Keep the records of one logger, whatever handlers and propagation the root has."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collector_log() -> Iterator[_Records]:
    logger = logging.getLogger("syncagg.collector")
    handler = _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _row(x: int) -> dict[str, Any]:
    return {"x": x, "extra": x} if x in REJECTED else {"x": x}


def _inputs(stop_after: int | None = None) -> Iterator[dict[str, Any]]:
    for x in range(COUNT):
        if x == stop_after:
            raise OSError("disk gone")
        yield _row(x)


def _aggregator(tmp_path: Path) -> sa.Aggregator:
    return sa.Aggregator(
        workers=2,
        progress=False,
        outputs=[sa.Csv(tmp_path / "rows.csv", columns=["x"], extra="dead_letter"), tmp_path / "rows.jsonl"],
        dead_letters=tmp_path / "dead.jsonl",
        checkpoint=tmp_path / "run.sqlite",
    )


def test_rejected_rows_counted_across_resume(tmp_path: Path) -> None:
    with pytest.raises(sa.InputError):
        _aggregator(tmp_path).run(jobs.identity, _inputs(stop_after=15))

    summary = _aggregator(tmp_path).run(jobs.identity, _inputs())

    csv_path, jsonl_path = str(tmp_path / "rows.csv"), str(tmp_path / "rows.jsonl")
    assert summary.counts["resumed"] == 15
    assert summary.rejected_rows == {csv_path: len(REJECTED), jsonl_path: 0}
    assert summary.to_dict()["rejected_rows"] == {csv_path: len(REJECTED), jsonl_path: 0}
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert sorted(letter["job_id"] for letter in dead) == REJECTED
    assert {letter["stage"] for letter in dead} == {f"output {csv_path}"}


def test_finished_run_keeps_rejected_rows(tmp_path: Path) -> None:
    _aggregator(tmp_path).run(jobs.identity, _inputs())

    again = _aggregator(tmp_path).run(jobs.identity, _inputs())

    assert again.counts["resumed"] == COUNT
    assert again.rejected_rows[str(tmp_path / "rows.csv")] == len(REJECTED)


def test_summary_table_names_rejected_rows(tmp_path: Path) -> None:
    summary = _aggregator(tmp_path).run(jobs.identity, _inputs())

    lines = format_summary(summary).splitlines()

    assert f"outputs      {tmp_path / 'rows.csv'} ({len(REJECTED)} rows rejected to the dead letters)" in lines
    assert f"             {tmp_path / 'rows.jsonl'}" in lines


def test_failed_jobs_logged_then_rate_limited(collector_log: _Records) -> None:
    sa.Aggregator(workers=2, progress=False).run(jobs.always_fail, range(50))

    warnings = [r.getMessage() for r in collector_log.records if r.levelno == logging.WARNING]
    debug = [r.getMessage() for r in collector_log.records if r.levelno == logging.DEBUG and " failed: " in r.getMessage()]
    failed = warnings[:-1] + debug
    ids = sorted(int(message.split()[1]) for message in failed)
    assert len(warnings) == 21
    assert warnings[-1] == "logging further failed jobs at DEBUG only; the summary counts them all"
    assert ids == list(range(50))
    for message in failed:
        x = int(message.split()[1])
        assert message == f"job {x} ({x}) failed: RuntimeError: cannot handle {x}"


def test_dead_worker_logged_as_failed(collector_log: _Records) -> None:
    sa.Aggregator(workers=2, progress=False, retries=0).run(jobs.kill_self_on_13, range(20))

    warnings = [r.getMessage() for r in collector_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("job 13 (13) failed: syncagg.WorkerDied: ")
