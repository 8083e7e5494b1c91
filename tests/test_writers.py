"""Writer threads through Aggregator: dead letters, stalls, sealing, disk errors, tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import syncagg as sa
from syncagg.outputs import ArrowIpc, Csv, Json, JsonLines, Output, Parquet
from tests import jobs, output_jobs
from tests.test_formats import _start_reader_threads, read_duckdb, read_pyarrow

# Imported so that it runs here too: it warms up the readers' thread pools.
__all__ = ["_start_reader_threads"]

ROOT = Path(__file__).resolve().parent.parent


class SlowJsonLines(JsonLines):
    """JSON Lines whose every write takes 20 ms, so its queue fills."""

    def write(self, rows: list[dict[str, Any]]) -> None:
        time.sleep(0.02)
        super().write(rows)


class SealFailsOnce(Csv):
    """CSV whose first ``seal`` in this process raises ``OSError``."""

    failed: ClassVar[bool] = False

    def seal(self) -> None:
        if not SealFailsOnce.failed:
            SealFailsOnce.failed = True
            raise OSError("simulated failure while sealing")
        super().seal()


def test_rejected_rows_become_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    dead = tmp_path / "dead.jsonl"
    output = Parquet(path, schema=pa.schema([("x", pa.int64()), ("score", pa.int64())]), invalid="dead_letter")
    aggregator = sa.Aggregator(outputs=[output], dead_letters=dead, workers=2, progress=False)

    summary = aggregator.run(output_jobs.score_row, range(50))

    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert summary.counts["ok"] == 50
    assert sorted(pq.read_table(path).column("x").to_pylist()) == [x for x in range(50) if x % 10]
    assert sorted(letter["job_id"] for letter in letters) == [0, 10, 20, 30, 40]
    assert sorted(letter["key"] for letter in letters) == ["0", "10", "20", "30", "40"]
    assert {letter["stage"] for letter in letters} == {f"output {path}"}
    assert {letter["stage_index"] for letter in letters} == {-1}
    assert letters[0]["reason"].startswith("column 'score': value 1.5 (float) does not fit the declared type int64")


def test_dead_letter_policy_needs_output(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="there is no dead-letter output; pass Aggregator\\(dead_letters=PATH\\)"):
        sa.Aggregator(outputs=[JsonLines(tmp_path / "rows.jsonl", invalid="dead_letter")], progress=False)


def test_rejected_row_stops_run(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path, schema=pa.schema([("x", pa.int64()), ("score", pa.int64())]))
    aggregator = sa.Aggregator(outputs=[output], workers=2, progress=False)

    with pytest.raises(sa.OutputError, match=r"column 'score': value 1.5 \(float\) does not fit the declared type int64"):
        aggregator.run(output_jobs.score_row, range(50))

    assert os.listdir(tmp_path) == []


def test_slow_output_stall_reported(tmp_path: Path) -> None:
    slow = tmp_path / "slow.jsonl"
    fast = tmp_path / "fast.jsonl"
    aggregator = sa.Aggregator(
        outputs=[SlowJsonLines(slow), JsonLines(fast)],
        workers=2,
        progress=False,
        queue_size=1,
        batch_latency=0.001,
    )

    summary = aggregator.run(output_jobs.slow_square, range(300))

    assert set(summary.stall_seconds) == {str(slow), str(fast)}
    assert summary.stall_seconds[str(slow)] > 0
    assert summary.stall_seconds[str(fast)] >= 0
    assert len(slow.read_text().splitlines()) == 300
    assert len(fast.read_text().splitlines()) == 300


def test_failed_seal_publishes_nothing(tmp_path: Path) -> None:
    SealFailsOnce.failed = False
    first = tmp_path / "rows.jsonl"
    second = tmp_path / "rows.csv"

    def make() -> sa.Aggregator:
        outputs = [JsonLines(first), SealFailsOnce(second), Parquet(tmp_path / "rows.parquet")]
        return sa.Aggregator(outputs=outputs, checkpoint=tmp_path / "run.sqlite", workers=2, progress=False)

    with pytest.raises(sa.OutputError, match=f"writing '{second}' failed: OSError: simulated failure"):
        make().run(jobs.square, range(100))

    assert not first.exists()
    assert not second.exists()
    assert not (tmp_path / "rows.parquet").exists()

    summary = make().run(jobs.square, range(100))

    assert summary.counts["ok"] == 100
    assert sorted(row["x"] for row in read_pyarrow(first)) == list(range(100))
    assert sorted(row["x"] for row in read_pyarrow(second)) == list(range(100))
    assert sorted(row["x"] for row in read_pyarrow(tmp_path / "rows.parquet")) == list(range(100))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "rows.jsonl", "rows.parquet", "run.sqlite"]


@pytest.mark.parametrize("output_type", [Parquet, ArrowIpc], ids=["parquet", "arrow"])
def test_unstorable_ints_become_dead_letters(tmp_path: Path, output_type: type[Output]) -> None:
    path = tmp_path / f"rows.{output_type.format}"
    dead = tmp_path / "dead.jsonl"
    output = output_type(path, invalid="dead_letter")  # type: ignore[call-arg]
    # One worker returns the results in input order, so 2**53 + 1 comes before 0.5.
    aggregator = sa.Aggregator(outputs=[output], dead_letters=dead, workers=1, progress=False)

    summary = aggregator.run(output_jobs.wide_int_row, range(8))

    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert summary.counts["ok"] == 8
    assert read_pyarrow(path) == [{"x": x, "v": 2**53 + 1 if x == 0 else x} for x in (0, 1, 2, 4, 6, 7)]
    assert [letter["job_id"] for letter in letters] == [3, 5]
    assert "value 18446744073709551616 (int) is outside the int64 range" in letters[0]["reason"]
    assert "value 0.5 (float) would widen int64 to double" in letters[1]["reason"]


def _run_full_disk(out: Path, count: int, fail_after: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.output_jobs", str(out), str(count), str(fail_after)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_disk_full_then_resume(tmp_path: Path) -> None:
    failed = _run_full_disk(tmp_path, 400, fail_after=30)

    assert failed["error"].startswith(f"writing '{tmp_path / 'rows.jsonl'}' failed: OSError: [Errno 28]")
    assert "No space left on device" in failed["error"]
    assert not (tmp_path / "rows.jsonl").exists()

    finished = _run_full_disk(tmp_path, 400, fail_after=0)

    assert finished["counts"]["ok"] == 400
    assert finished["counts"]["resumed"] > 0
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["x"] for line in lines) == list(range(400))
    assert sorted(pq.read_table(tmp_path / "rows.parquet").column("x").to_pylist()) == list(range(400))


# Jobs that return Arrow tables -----------------------------------------------------

TABLE_FORMATS = {"json": Json, "jsonl": JsonLines, "csv": Csv, "parquet": Parquet, "arrow": ArrowIpc}
STARTS = range(0, 2000, output_jobs.BLOCK_ROWS)
EXPECTED = [row for start in STARTS for row in output_jobs.block_rows(start)]


@pytest.mark.parametrize("in_workers", [False, True], ids=["parent", "workers"])
def test_table_jobs_fill_outputs(tmp_path: Path, in_workers: bool) -> None:
    paths = {name: tmp_path / f"rows.{name}" for name in TABLE_FORMATS}
    outputs = [output_type(paths[name]) for name, output_type in TABLE_FORMATS.items()]
    aggregator = sa.Aggregator(outputs=outputs, workers=2, progress=False, encode_in_workers=in_workers)

    summary = aggregator.run(output_jobs.arrow_block, STARTS)

    assert summary.counts["ok"] == len(STARTS)
    assert all(isinstance(value, pa.RecordBatch) for value in summary.value)
    for name, path in paths.items():
        rows = sorted(read_duckdb(path), key=lambda row: row["id"])
        assert rows == EXPECTED, name


def test_table_job_rejects_name_job(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    dead = tmp_path / "dead.jsonl"
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("half", pa.int64()), ("even", pa.bool_())])
    output = Parquet(path, schema=schema, invalid="dead_letter")
    aggregator = sa.Aggregator(outputs=[output], dead_letters=dead, workers=2, progress=False)

    aggregator.run(output_jobs.arrow_block, [0, 100])

    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(letters) == 100
    assert {letter["job_id"] for letter in letters} == {0, 1}
    assert sorted(pq.read_table(path).column("id").to_pylist()) == list(range(0, 200, 2))


# Live files ------------------------------------------------------------------------


def test_live_jsonl_under_final_name(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    output = JsonLines(path, live=True)
    output.open(None)
    output.write([{"a": 1}])
    output.commit()

    assert path.read_bytes() == b'{"a":1}\n'

    output.finish()

    assert os.listdir(tmp_path) == ["rows.jsonl"]


def test_live_parquet_cannot_resume(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path, live=True)
    output.open(None)
    output.write([{"a": 1}])
    position = output.commit()
    output.close()

    with pytest.raises(sa.CheckpointError, match="cannot resume the live parquet output"):
        Parquet(path, live=True).open(position)


def test_live_parquet_reads_after_finish(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path, live=True, row_group_rows=2)
    output.open(None)
    output.write([{"a": 1}, {"a": 2}, {"a": 3}])
    output.finish()

    assert pq.read_table(path).to_pylist() == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert os.listdir(tmp_path) == ["rows.parquet"]


def test_table_jobs_under_spawn(tmp_path: Path) -> None:
    """The wrapped function and the encoders pickle for a spawned worker."""
    path = tmp_path / "rows.jsonl"
    aggregator = sa.Aggregator(
        outputs=[JsonLines(path), Csv(tmp_path / "rows.csv")],
        workers=2,
        progress=False,
        encode_in_workers=True,
        start_method="spawn",
    )

    aggregator.run(output_jobs.arrow_block, [0, 100])

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(rows, key=lambda row: row["id"]) == output_jobs.block_rows(0) + output_jobs.block_rows(100)


def _run_live_csv(out: Path, count: int, kill: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tests.output_jobs", "live-csv", str(out), str(count), kill]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_live_csv_extend_killed_after_publish(tmp_path: Path) -> None:
    """A SIGKILL after the rewrite replaced the live file, before the checkpoint records the end."""
    path = tmp_path / "rows.csv"

    crashed = _run_live_csv(tmp_path, 30, "after-publish")

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert path.read_bytes().startswith(b"x,name,extra\r\n")

    finished = _run_live_csv(tmp_path, 30, "none")

    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout.splitlines()[-1])["counts"]["resumed"] == 30
    expected = [{"x": x, "name": f"row {x}", "extra": x * 10 if x >= 10 else None} for x in range(30)]
    assert sorted(read_pyarrow(path), key=lambda row: row["x"]) == expected
    assert sorted(read_duckdb(path), key=lambda row: row["x"]) == expected
    assert path.read_bytes().count(b"\r\n") == 31
    assert sorted(os.listdir(tmp_path)) == ["rows.csv", "run.sqlite"]


def test_live_csv_extend_rewrites_final(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    output = Csv(path, extra="extend", live=True)
    output.open(None)
    output.write([{"a": 1}])
    output.write([{"a": 2, "b": 3}])
    output.commit()

    assert path.read_bytes() == b"a\r\n1\r\n2,3\r\n"

    output.finish()

    assert path.read_bytes() == b"a,b\r\n1,\r\n2,3\r\n"
    assert os.listdir(tmp_path) == ["rows.csv"]
