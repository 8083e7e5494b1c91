"""Pipelines through real workers: where, map, validate, normalize and dead letters."""

from __future__ import annotations

import datetime
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import syncagg as sa
from tests import combine_jobs, jobs, output_jobs

COUNT = 60
OK = [x for x in range(COUNT) if x % 7 != 0]
FAILED = [x for x in range(COUNT) if x % 7 == 0]
EVEN_OK = [x for x in OK if x % 2 == 0]
KIB_SCHEMA = {"x": int, "group": str, "kib": float}


def _kib_pipeline(in_workers: bool) -> sa.Pipeline:
    return (
        sa.Pipeline(in_workers=in_workers)
        .where(combine_jobs.even)
        .map(combine_jobs.with_kib)
        .validate(KIB_SCHEMA)
    )


def _kib_row(x: int) -> dict[str, Any]:
    return combine_jobs.with_kib(combine_jobs.row(x))


def _read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("in_workers", [False, True], ids=["collector", "workers"])
def test_stages_shape_values(in_workers: bool) -> None:
    aggregator = sa.Aggregator(workers=2, progress=False, pipeline=_kib_pipeline(in_workers))
    summary = aggregator.run(combine_jobs.row_failing_on_sevens, range(COUNT))

    assert sorted(summary.value, key=lambda row: row["x"]) == [_kib_row(x) for x in EVEN_OK]
    assert summary.counts["ok"] == len(OK)
    assert summary.counts["failed"] == len(FAILED)
    assert summary.counts["passed"] == len(EVEN_OK) + len(FAILED)
    assert summary.counts["filtered_out"] == len(OK) - len(EVEN_OK)
    assert summary.counts["dead_letter"] == 0


@pytest.mark.parametrize("in_workers", [False, True], ids=["collector", "workers"])
def test_stage_counts_per_stage(in_workers: bool) -> None:
    aggregator = sa.Aggregator(workers=2, progress=False, pipeline=_kib_pipeline(in_workers))
    summary = aggregator.run(combine_jobs.row_failing_on_sevens, range(COUNT))

    where, mapped, validated = summary.stages
    assert where == sa.StageCounts("where(tests.combine_jobs.even)", len(EVEN_OK), len(OK) - len(EVEN_OK), 0)
    assert mapped == sa.StageCounts("map(tests.combine_jobs.with_kib)", len(EVEN_OK), 0, 0)
    assert validated == sa.StageCounts("validate(Schema(x: int, group: str, kib: float))", len(EVEN_OK), 0, 0)


def _dead_letter_pipeline(in_workers: bool) -> sa.Pipeline:
    return (
        sa.Pipeline(in_workers=in_workers)
        .map(combine_jobs.drop_lines_on_fives)
        .validate({"x": int, "lines": int})
    )


@pytest.mark.parametrize("in_workers", [False, True], ids=["collector", "workers"])
def test_dead_letters_reach_file(tmp_path: Path, in_workers: bool) -> None:
    aggregator = sa.Aggregator(
        workers=2,
        progress=False,
        outputs=[tmp_path / "rows.jsonl"],
        pipeline=_dead_letter_pipeline(in_workers),
        dead_letters=tmp_path / "dead.jsonl",
    )
    summary = aggregator.run(combine_jobs.row_failing_on_sevens, range(COUNT))

    dead = sorted(_read_lines(tmp_path / "dead.jsonl"), key=lambda letter: letter["job_id"])
    expected_ids = [x for x in OK if x % 5 == 0]
    assert [letter["job_id"] for letter in dead] == expected_ids
    assert {letter["key"] for letter in dead} == {str(x) for x in expected_ids}
    assert {letter["stage"] for letter in dead} == {"validate(Schema(x: int, lines: int))"}
    assert {letter["stage_index"] for letter in dead} == {1}
    assert {letter["reason"] for letter in dead} == {"field 'lines' is missing, but it is not nullable"}
    assert dead[0]["value"] == repr(combine_jobs.drop_lines_on_fives(combine_jobs.row(5)))

    rows = _read_lines(tmp_path / "rows.jsonl")
    assert sorted(row["x"] for row in rows) == [x for x in OK if x % 5 != 0]
    assert summary.counts["dead_letter"] == len(expected_ids)
    assert len(summary.dead_letters) == len(expected_ids)


def test_map_error_is_dead_letter() -> None:
    # jobs.square rows have no "group", so with_kib raises KeyError.
    aggregator = sa.Aggregator(workers=2, progress=False, pipeline=sa.Pipeline().map(combine_jobs.with_kib))
    summary = aggregator.run(jobs.square, range(10))

    assert summary.value == []
    assert summary.counts["dead_letter"] == 10
    letter = min(summary.dead_letters, key=lambda letter: letter.job_id)
    assert letter.job_id == 0
    assert letter.stage == "map(tests.combine_jobs.with_kib)"
    assert letter.reason == "KeyError: 'group'"
    assert letter.value == "{'x': 0, 'square': 0}"


def test_dead_letters_csv_by_suffix(tmp_path: Path) -> None:
    aggregator = sa.Aggregator(
        workers=1,
        progress=False,
        pipeline=sa.Pipeline().validate({"square": str}),
        dead_letters=tmp_path / "dead.csv",
    )
    aggregator.run(jobs.square, range(3))
    lines = (tmp_path / "dead.csv").read_text().splitlines()
    assert lines[0] == "job_id,key,stage,stage_index,reason,value"
    assert len(lines) == 4


def test_normalize_numpy_and_dates(tmp_path: Path) -> None:
    pipeline = (
        sa.Pipeline(in_workers=True)
        .normalize(nan="null", datetimes="iso")
        .validate({"x": int, "half": (float, None), "at": str})
    )
    aggregator = sa.Aggregator(workers=2, progress=False, pipeline=pipeline, outputs=[tmp_path / "rows.jsonl"])
    summary = aggregator.run(combine_jobs.numpy_row, range(6))

    rows = sorted(summary.value, key=lambda row: row["x"])
    assert rows[0] == {"x": 0, "half": 0.0, "at": "2024-01-01T00:00:00+00:00"}
    assert rows[1] == {"x": 1, "half": None, "at": "2024-01-01T01:00:00+00:00"}
    assert type(rows[2]["x"]) is int
    assert sorted(_read_lines(tmp_path / "rows.jsonl"), key=lambda row: row["x"]) == rows


def test_normalize_nan_dead_letter() -> None:
    pipeline = sa.Pipeline().normalize(nan="dead_letter")
    summary = sa.Aggregator(workers=2, progress=False, pipeline=pipeline).run(combine_jobs.numpy_row, range(6))

    assert sorted(row["x"] for row in summary.value) == [0, 2, 4]
    assert sorted(letter.job_id for letter in summary.dead_letters) == [1, 3, 5]
    assert {letter.reason for letter in summary.dead_letters} == {
        "field 'half' is NaN; fix the function or pick nan='null'"
    }


def test_normalize_utc_keeps_datetimes() -> None:
    pipeline = sa.Pipeline().normalize(datetimes="utc")
    summary = sa.Aggregator(workers=sa.Threads(2), progress=False, pipeline=pipeline).run(
        combine_jobs.numpy_row, range(1)
    )
    assert summary.value[0]["at"] == datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def test_validate_arrow_schema() -> None:
    schema = pa.schema([pa.field("x", pa.int64(), nullable=False), pa.field("square", pa.string())])
    pipeline = sa.Pipeline().validate(schema)
    summary = sa.Aggregator(workers=1, progress=False, pipeline=pipeline).run(jobs.square, range(3))

    assert summary.value == []
    assert {letter.reason for letter in summary.dead_letters} == {"field 'square' must be str | None, got int 0"} | {
        f"field 'square' must be str | None, got int {x * x}" for x in (1, 2)
    }


def test_status_filter_counts_failures() -> None:
    pipeline = sa.Pipeline().where(status="ok")
    summary = sa.Aggregator(workers=2, progress=False, pipeline=pipeline).run(
        combine_jobs.row_failing_on_sevens, range(COUNT)
    )
    assert summary.counts["filtered_out"] == len(FAILED)
    assert summary.counts["passed"] == len(OK)
    assert summary.counts["failed"] == len(FAILED)
    assert len(summary.failures) == len(FAILED)


def _failed_row(x: int) -> dict[str, Any]:
    return {
        "job_id": x,
        "key": str(x),
        "status": "failed",
        "error_type": "ValueError",
        "error_message": f"{x} is a multiple of 7",
    }


@pytest.mark.parametrize("status", ["all", ["ok", "failed"]], ids=["all", "list"])
def test_status_all_writes_failed_rows(tmp_path: Path, status: Any) -> None:
    outputs = [tmp_path / "rows.jsonl", sa.Csv(tmp_path / "rows.csv", extra="extend"), tmp_path / "rows.parquet"]
    aggregator = sa.Aggregator(workers=2, progress=False, outputs=outputs, pipeline=sa.Pipeline().where(status=status))
    summary = aggregator.run(jobs.fail_on_multiples_of_seven, range(COUNT))

    rows = _read_lines(tmp_path / "rows.jsonl")
    ok = sorted((row for row in rows if row["status"] == "ok"), key=lambda row: row["x"])
    failed = sorted((row for row in rows if row["status"] == "failed"), key=lambda row: row["job_id"])
    assert len(rows) == COUNT
    assert ok == [{"x": x, "square": x * x, "status": "ok"} for x in OK]
    assert failed == [_failed_row(x) for x in FAILED]
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.num_rows == COUNT
    assert sorted(table.column("status").to_pylist()) == sorted(row["status"] for row in rows)
    csv_lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert len(csv_lines) == COUNT + 1
    assert set(csv_lines[0].split(",")) == {"x", "square", "status", "job_id", "key", "error_type", "error_message"}
    assert sorted(row["x"] for row in summary.value) == OK
    assert summary.counts["passed"] == COUNT


def test_status_failed_writes_only_failed(tmp_path: Path) -> None:
    pipeline = sa.Pipeline().where(status="failed")
    aggregator = sa.Aggregator(workers=2, progress=False, outputs=[tmp_path / "rows.jsonl"], pipeline=pipeline)
    summary = aggregator.run(jobs.fail_on_multiples_of_seven, range(COUNT))

    rows = sorted(_read_lines(tmp_path / "rows.jsonl"), key=lambda row: row["job_id"])
    assert rows == [_failed_row(x) for x in FAILED]
    assert summary.value == []
    assert summary.counts["filtered_out"] == len(OK)


def test_no_status_keeps_outputs_ok(tmp_path: Path) -> None:
    pipeline = sa.Pipeline().validate({"x": int, "square": int})
    aggregator = sa.Aggregator(workers=2, progress=False, outputs=[tmp_path / "rows.jsonl"], pipeline=pipeline)
    aggregator.run(jobs.fail_on_multiples_of_seven, range(COUNT))

    rows = sorted(_read_lines(tmp_path / "rows.jsonl"), key=lambda row: row["x"])
    assert rows == [{"x": x, "square": x * x} for x in OK]


def test_dead_worker_writes_failed_row(tmp_path: Path) -> None:
    aggregator = sa.Aggregator(
        workers=2,
        progress=False,
        retries=0,
        outputs=[tmp_path / "rows.jsonl"],
        pipeline=sa.Pipeline().where(status="all"),
    )
    aggregator.run(jobs.kill_self_on_13, range(20))

    rows = _read_lines(tmp_path / "rows.jsonl")
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(rows) == 20
    assert sorted(row["x"] for row in rows if row["status"] == "ok") == [x for x in range(20) if x != 13]
    assert len(failed) == 1
    assert failed[0]["job_id"] == 13
    assert failed[0]["key"] == "13"
    assert failed[0]["error_type"] == "syncagg.WorkerDied"


def test_status_all_tags_tables(tmp_path: Path) -> None:
    outputs = [tmp_path / "rows.parquet", tmp_path / "rows.jsonl"]
    pipeline = sa.Pipeline().where(status="all")
    aggregator = sa.Aggregator(workers=2, progress=False, outputs=outputs, pipeline=pipeline)
    aggregator.run(output_jobs.arrow_block, [0, output_jobs.BLOCK_ROWS])

    table = pq.read_table(tmp_path / "rows.parquet").sort_by("id")
    expected = output_jobs.block_rows(0) + output_jobs.block_rows(output_jobs.BLOCK_ROWS)
    assert table.column_names == ["id", "name", "half", "even", "status"]
    assert table.to_pylist() == [{**row, "status": "ok"} for row in expected]
    lines = sorted(_read_lines(tmp_path / "rows.jsonl"), key=lambda row: row["id"])
    assert lines == [{**row, "status": "ok"} for row in expected]


def test_status_field_taken_raises(tmp_path: Path) -> None:
    aggregator = sa.Aggregator(
        workers=1, progress=False, outputs=[tmp_path / "rows.jsonl"], pipeline=sa.Pipeline().where(status="all")
    )
    with pytest.raises(sa.OutputError, match=r"job 1 \(\{'status': 200\}\) returned a row with a 'status' field"):
        aggregator.run(jobs.identity, [{"code": 1}, {"status": 200}])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", ["error", "ignore"])
def test_status_all_rejects_plain_csv(tmp_path: Path, extra: str) -> None:
    csv_output = sa.Csv(tmp_path / "rows.csv", extra=extra)
    with pytest.raises(ValueError, match=rf"CSV output .*rows.csv' receives failed jobs.* extra='{extra}'; pass "):
        sa.Aggregator(outputs=[csv_output], pipeline=sa.Pipeline().where(status="all"))


def test_status_all_accepts_declared_csv(tmp_path: Path) -> None:
    columns = ["x", "square", "status", "job_id", "key", "error_type", "error_message"]
    csv_output = sa.Csv(tmp_path / "rows.csv", columns=columns)
    aggregator = sa.Aggregator(
        workers=2, progress=False, outputs=[csv_output], pipeline=sa.Pipeline().where(status="all")
    )
    aggregator.run(jobs.fail_on_multiples_of_seven, range(COUNT))

    lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert lines[0] == ",".join(columns)
    assert ",,failed,7,7,ValueError,7 is a multiple of 7" in lines
    assert len(lines) == COUNT + 1


def test_worker_stages_in_threads() -> None:
    pipeline = sa.Pipeline(in_workers=True).where(lambda row: row["x"] > 10).map(lambda row: row["x"])
    summary = sa.Aggregator(workers=sa.Threads(2), progress=False, pipeline=pipeline).run(
        combine_jobs.row, range(20)
    )
    assert sorted(summary.value) == list(range(11, 20))


def test_worker_stages_in_executor() -> None:
    with ProcessPoolExecutor(2) as executor:
        aggregator = sa.Aggregator(executor=executor, progress=False, pipeline=_kib_pipeline(True))
        summary = aggregator.run(combine_jobs.row_failing_on_sevens, range(COUNT))
    assert sorted(row["x"] for row in summary.value) == EVEN_OK
    assert summary.counts["filtered_out"] == len(OK) - len(EVEN_OK)


def test_collect_runs_stages_in_collector() -> None:
    with ProcessPoolExecutor(2) as executor:
        futures = [executor.submit(combine_jobs.row, x) for x in range(COUNT)]
        aggregator = sa.Aggregator(progress=False, pipeline=_kib_pipeline(True))
        summary = aggregator.collect(futures)
    assert sorted(row["x"] for row in summary.value) == [x for x in range(COUNT) if x % 2 == 0]


def test_worker_combine_after_worker_stages() -> None:
    pipeline = sa.Pipeline(in_workers=True).where(combine_jobs.even).map(combine_jobs.with_kib)
    strategy = sa.Combine(sa.GroupBy("group", sa.Sum("kib")), in_workers=True)
    summary = sa.Aggregator(strategy=strategy, workers=2, progress=False, pipeline=pipeline).run(
        combine_jobs.row_failing_on_sevens, range(COUNT)
    )
    expected = sa.GroupBy("group", sa.Sum("kib")).fold([_kib_row(x) for x in EVEN_OK])
    assert summary.value == expected
    assert summary.counts["filtered_out"] == len(OK) - len(EVEN_OK)


def test_worker_combine_rejects_collector_stage() -> None:
    pipeline = sa.Pipeline().map(combine_jobs.with_kib)
    with pytest.raises(ValueError, match=r"stage map\(tests.combine_jobs.with_kib\) runs in the collector, but "
                       r"Combine\(Count\(\), in_workers=True\) folds values in the workers"):
        sa.Aggregator(strategy=sa.Combine(sa.Count(), in_workers=True), pipeline=pipeline)


def test_worker_stage_after_collector_stage() -> None:
    pipeline = sa.Pipeline().where(combine_jobs.even).map(combine_jobs.with_kib, in_workers=True)
    with pytest.raises(ValueError, match=r"stage 1 map\(tests.combine_jobs.with_kib\) runs in the workers but "
                       r"follows stage 0 where\(tests.combine_jobs.even\), which runs in the collector"):
        sa.Aggregator(pipeline=pipeline)


def test_unpicklable_worker_stage_raises() -> None:
    pipeline = sa.Pipeline(in_workers=True).map(lambda row: row)
    aggregator = sa.Aggregator(workers=1, progress=False, pipeline=pipeline)
    with pytest.raises(TypeError, match=r"pipeline stage 0 map\(.*<lambda>\) runs in worker processes, but its "
                       r"function cannot be pickled"):
        aggregator.run(jobs.square, range(3))


def test_pipeline_counts_survive_resume(tmp_path: Path) -> None:
    def broken_inputs():  # type: ignore[no-untyped-def]
        yield from range(30)
        raise OSError("disk gone")

    aggregator = sa.Aggregator(
        workers=2, progress=False, pipeline=_kib_pipeline(True), checkpoint=tmp_path / "run.sqlite"
    )
    with pytest.raises(sa.InputError):
        aggregator.run(combine_jobs.row_failing_on_sevens, broken_inputs())
    summary = aggregator.run(combine_jobs.row_failing_on_sevens, (x for x in range(COUNT)))

    assert summary.counts["resumed"] == 30
    assert summary.counts["filtered_out"] == len(OK) - len(EVEN_OK)
    assert summary.stages[0].passed == len(EVEN_OK)
    assert summary.to_dict()["stages"][0]["filtered_out"] == len(OK) - len(EVEN_OK)


def test_checkpoint_rejects_other_pipeline(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.sqlite"
    sa.Aggregator(workers=1, progress=False, checkpoint=checkpoint, pipeline=_kib_pipeline(False)).run(
        combine_jobs.row, range(4)
    )
    other = sa.Aggregator(workers=1, progress=False, checkpoint=checkpoint, pipeline=_kib_pipeline(True))
    with pytest.raises(sa.CheckpointMismatchError, match=r"pipeline: checkpoint has 'where"):
        other.run(combine_jobs.row, range(4))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: sa.Pipeline().where(), TypeError, r"where\(\) needs a predicate, a status, or both"),
        (lambda: sa.Pipeline().where(status="done"), ValueError, r"takes 'ok', 'failed', 'all' or a list of them, got 'done'"),
        (lambda: sa.Pipeline().map(3), TypeError, r"map\(fn\) must be callable, got 3"),
        (lambda: sa.Pipeline().validate([int]), TypeError, r"validate\(\) takes a syncagg.Schema"),
        (lambda: sa.Pipeline().normalize(nan="drop"), ValueError, r"normalize\(nan=...\) must be one of"),
        (lambda: sa.Aggregator(pipeline="x"), TypeError, r"pipeline must be a syncagg.Pipeline, got 'x'"),
        (lambda: sa.Aggregator(dead_letters=3), TypeError, r"dead_letters must be a path or a syncagg output"),
    ],
    ids=["where-empty", "status", "map", "schema", "nan", "pipeline-type", "dead-letters-type"],
)
def test_bad_pipeline_settings(make: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def test_dead_letters_path_distinct(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"two outputs write to"):
        sa.Aggregator(outputs=[tmp_path / "a.jsonl"], dead_letters=tmp_path / "a.jsonl")
