"""Parquet and Arrow IPC outputs: the file written through the run, its part files, empty runs."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import syncagg as sa
from syncagg.outputs import ArrowIpc, Output, Parquet
from syncagg.outputs.partfiles import EMPTY_SCHEMA
from tests import jobs
from tests.test_formats import (
    _start_reader_threads,
    read_duckdb,
    read_pandas,
    read_polars,
    read_pyarrow,
)

# Imported so that it runs here too: it warms up the readers' thread pools.
__all__ = ["_start_reader_threads"]

COLUMNAR = [pytest.param(Parquet, id="parquet"), pytest.param(ArrowIpc, id="arrow")]
SUFFIXES = {"parquet": ".parquet", "arrow": ".arrow"}
ROWS = [{"id": i, "name": f"row {i}"} for i in range(40)]


def make(output_type: type[Output], path: Path, group_rows: int = 65536, **settings: Any) -> Output:
    """Build a Parquet or Arrow IPC output with ``group_rows`` rows per row group or record batch."""
    factory: Any = output_type
    return factory(path, group_rows, **settings)  # type: ignore[no-any-return]


def path_for(tmp_path: Path, output_type: type[Output]) -> Path:
    return tmp_path / f"rows{SUFFIXES[output_type.format]}"


def parts_folder(path: Path) -> Path:
    return path.with_name(f".{path.name}.parts")


def file_schema(path: Path) -> pa.Schema:
    if path.suffix == ".parquet":
        return pq.read_schema(path)
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_file(source).schema


def group_sizes(path: Path) -> list[int]:
    if path.suffix == ".parquet":
        metadata = pq.read_metadata(path)
        return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_file(source)
        return [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]


def hidden_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


# Empty runs ----------------------------------------------------------------


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_empty_file_opens_in_every_reader(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output = output_type(path)
    output.open(None)
    output.finish()

    assert file_schema(path) == EMPTY_SCHEMA
    assert read_pyarrow(path) == []
    assert read_pandas(path) == []
    assert read_polars(path) == []
    assert read_duckdb(path) == []
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_empty_file_keeps_declared_schema(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    output = make(output_type, path, schema=schema)
    output.open(None)
    output.commit()
    output.finish()

    assert file_schema(path) == schema
    assert read_pandas(path) == []
    assert read_duckdb(path) == []


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_empty_live_file_opens(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output = make(output_type, path, live=True)
    output.open(None)
    output.finish()

    assert file_schema(path) == EMPTY_SCHEMA
    assert read_duckdb(path) == []
    assert read_polars(path) == []


def test_empty_run_writes_readable_files(tmp_path: Path) -> None:
    paths = [tmp_path / "rows.parquet", tmp_path / "rows.arrow"]
    aggregator = sa.Aggregator(outputs=paths, checkpoint=tmp_path / "run.sqlite", workers=1, progress=False)

    summary = aggregator.run(jobs.square, [])

    assert summary.counts["ok"] == 0
    for path in paths:
        assert file_schema(path) == EMPTY_SCHEMA
        assert read_duckdb(path) == []
        assert read_pandas(path) == []


# The file and its parts -----------------------------------------------------


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_commit_writes_arrow_part(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output = output_type(path)
    output.open(None)
    output.write(ROWS[:10])

    position = output.commit()

    part = parts_folder(path) / "part-000000.arrow"
    with pa.OSFile(str(part), "rb") as source:
        assert pa.ipc.open_file(source).read_all().to_pylist() == ROWS[:10]
    assert position["parts"] == 1
    assert position["rows"] == 10
    output.discard()


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_commits_leave_whole_groups(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output = make(output_type, path, 8)
    output.open(None)
    for start in range(0, 30, 3):
        output.write(ROWS[start : start + 3])
        output.commit()
    output.finish()

    assert group_sizes(path) == [8, 8, 8, 6]
    assert read_pyarrow(path) == ROWS[:30]
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_widening_after_first_group_merges(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output = make(output_type, path, 2)
    output.open(None)
    output.write([{"a": 1}, {"a": 2}, {"a": 3}])
    output.commit()
    output.write([{"a": 2.5, "b": "x"}])
    output.finish()

    assert file_schema(path) == pa.schema([("a", pa.float64()), ("b", pa.string())])
    assert read_pyarrow(path) == [
        {"a": 1.0, "b": None},
        {"a": 2.0, "b": None},
        {"a": 3.0, "b": None},
        {"a": 2.5, "b": "x"},
    ]
    assert group_sizes(path) == [2, 2]
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_resume_after_widening(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    first = make(output_type, path, 2)
    first.open(None)
    first.write([{"a": 1}, {"a": 2}, {"a": 3}])
    first.write([{"a": 2.5}])
    position = first.commit()
    first.write([{"a": 99}])
    first.close()

    second = make(output_type, path, 2)
    second.open(position)
    second.write([{"a": 4}])
    second.finish()

    assert file_schema(path) == pa.schema([("a", pa.float64())])
    assert read_pyarrow(path) == [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}, {"a": 2.5}, {"a": 4.0}]
    assert group_sizes(path) == [2, 2, 1]


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_resume_writes_file_again(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    first = make(output_type, path, 4)
    first.open(None)
    first.write(ROWS[:10])
    position = first.commit()
    first.write(ROWS[10:20])
    first.close()

    assert hidden_files(tmp_path) == [f".{path.name}.partial", f".{path.name}.parts"]

    second = make(output_type, path, 4)
    second.open(position)
    second.write(ROWS[20:25])
    second.finish()

    assert read_pyarrow(path) == ROWS[:10] + ROWS[20:25]
    assert group_sizes(path) == [4, 4, 4, 3]
    assert os.listdir(tmp_path) == [path.name]


def test_resume_reads_parquet_parts(tmp_path: Path) -> None:
    """A checkpoint of a run whose parts are Parquet files still resumes."""
    path = tmp_path / "rows.parquet"
    parts_folder(path).mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS[:10]), parts_folder(path) / "part-000000.parquet")

    output = Parquet(path)
    output.open({"parts": 1, "rows": 10})
    output.write(ROWS[10:20])
    output.commit()
    output.write(ROWS[20:25])
    output.finish()

    assert read_pyarrow(path) == ROWS[:25]
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_resume_missing_part_raises(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    first = output_type(path)
    first.open(None)
    for start in (0, 5, 10):
        first.write(ROWS[start : start + 5])
        position = first.commit()
    first.close()
    (parts_folder(path) / "part-000001.arrow").unlink()

    with pytest.raises(
        sa.CheckpointError,
        match=r"1 of the 3 part files that the checkpoint refers to are missing .* the first "
        r"is number 1; delete the checkpoint file",
    ):
        output_type(path).open(position)


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_resume_row_count_mismatch_raises(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    first = output_type(path)
    first.open(None)
    first.write(ROWS[:5])
    first.commit()
    first.close()

    with pytest.raises(
        sa.CheckpointError,
        match=r"its 1 part files hold 5 rows but the checkpoint recorded 7; delete the checkpoint",
    ):
        output_type(path).open({"parts": 1, "rows": 7})


class _SealFailsWithFullDisk(Parquet):
    """A Parquet output whose writes raise ``OSError(ENOSPC)`` while ``seal`` runs."""

    full = False

    def _write_to(self, writer: Any, table: pa.Table) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        super()._write_to(writer, table)

    def seal(self) -> None:
        self.full = True
        super().seal()


def test_full_disk_in_seal_then_resume(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    first = _SealFailsWithFullDisk(path, 4)
    first.open(None)
    first.write(ROWS[:10])
    position = first.commit()

    with pytest.raises(OSError, match="No space left on device"):
        first.seal()
    first.close()

    assert not path.exists()

    second = Parquet(path, 4)
    second.open(position)
    second.finish()

    assert read_pyarrow(path) == ROWS[:10]
    assert os.listdir(tmp_path) == [path.name]


# Publishing -------------------------------------------------------------------


def _sealed(path: Path, output_type: type[Output]) -> tuple[Output, Any]:
    """Write two parts and seal; return the output and its last position."""
    output = output_type(path)
    output.open(None)
    output.write(ROWS[:10])
    output.commit()
    output.write(ROWS[10:20])
    position = output.commit()
    output.seal()
    return output, position


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_publish_removes_parts(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output, _ = _sealed(path, output_type)

    output.publish()

    assert os.listdir(tmp_path) == [path.name]
    assert output_type(path).is_published()


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_publish_killed_removing_parts(tmp_path: Path, output_type: type[Output]) -> None:
    """The state a kill leaves after the rename, with the part folder half removed."""
    path = path_for(tmp_path, output_type)
    output, _ = _sealed(path, output_type)
    output.close()
    path.with_name(f".{path.name}.partial").rename(path)
    removing = path.with_name(f".{path.name}.parts.removing")
    parts_folder(path).rename(removing)
    (removing / "part-000000.arrow").unlink()

    assert output_type(path).is_published()
    assert os.listdir(tmp_path) == [path.name]
    assert read_pyarrow(path) == ROWS[:20]


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_unpublished_with_stale_final(tmp_path: Path, output_type: type[Output]) -> None:
    """A file of an earlier run under the final name does not count while parts remain."""
    path = path_for(tmp_path, output_type)
    path.write_bytes(b"earlier run")
    output, position = _sealed(path, output_type)
    output.close()
    path.with_name(f".{path.name}.partial").unlink()

    assert not output_type(path).is_published()

    again = output_type(path)
    again.open(position)
    again.finish()

    assert read_pyarrow(path) == ROWS[:20]
    assert os.listdir(tmp_path) == [path.name]


# Runs without a checkpoint ------------------------------------------------------


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_unchecked_run_writes_no_parts(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output = make(output_type, path, 4)
    output.checkpointed = False
    output.open(None)
    output.write(ROWS[:10])

    position = output.commit()

    assert position == {"rows": 10}
    assert list(parts_folder(path).iterdir()) == []

    output.write(ROWS[10:15])
    output.finish()

    assert read_pyarrow(path) == ROWS[:15]
    assert group_sizes(path) == [4, 4, 4, 3]
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_unchecked_run_widens_late(tmp_path: Path, output_type: type[Output]) -> None:
    """Rows that only the open file contains survive a schema that widens after them."""
    path = path_for(tmp_path, output_type)
    output = make(output_type, path, 2)
    output.checkpointed = False
    output.open(None)
    output.write([{"a": 1}, {"a": 2}, {"a": 3}])
    output.commit()
    output.write([{"a": 2.5, "b": "x"}, {"a": 4}])
    output.write([{"a": 5}])
    output.finish()

    assert file_schema(path) == pa.schema([("a", pa.float64()), ("b", pa.string())])
    assert read_pyarrow(path) == [
        {"a": 1.0, "b": None},
        {"a": 2.0, "b": None},
        {"a": 3.0, "b": None},
        {"a": 2.5, "b": "x"},
        {"a": 4.0, "b": None},
        {"a": 5.0, "b": None},
    ]
    assert group_sizes(path) == [2, 2, 2]
    assert os.listdir(tmp_path) == [path.name]


def test_unchecked_position_cannot_resume(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"

    with pytest.raises(sa.CheckpointError, match="the position comes from a run without a checkpoint"):
        Parquet(path).open({"rows": 10})


@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpoint", "none"])
def test_aggregator_sets_checkpointed(tmp_path: Path, checkpoint: bool) -> None:
    output = Parquet(tmp_path / "rows.parquet")
    aggregator = sa.Aggregator(
        outputs=[output],
        checkpoint=tmp_path / "run.sqlite" if checkpoint else None,
        workers=1,
        progress=False,
    )

    summary = aggregator.run(jobs.square, range(20))

    assert output.checkpointed is checkpoint
    assert summary.counts["ok"] == 20
    assert sorted(row["x"] for row in read_pyarrow(output.path)) == list(range(20))


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_part_compression_resumes(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "rows.parquet"
    first = Parquet(path, part_compression=codec)
    first.open(None)
    first.write(ROWS[:10])
    position = first.commit()
    first.close()

    second = Parquet(path, part_compression=None)
    second.open(position)
    second.write(ROWS[10:20])
    second.finish()

    assert read_pyarrow(path) == ROWS[:20]


def test_part_compression_rejects_codec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"part_compression must be one of \(None, 'lz4', 'zstd'\), got 'snappy'"):
        Parquet(tmp_path / "rows.parquet", part_compression="snappy")
