"""Output formats, driven directly and through Aggregator, read back with real readers."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest

import syncagg as sa
from syncagg.outputs import Csv, JsonLines, Output, Parquet, RowError
from tests import jobs

FORMATS = [
    pytest.param(JsonLines, id="jsonl"),
    pytest.param(Csv, id="csv"),
    pytest.param(Parquet, id="parquet"),
]
SUFFIXES = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}

# Values that every format and every reader gives back unchanged.
ROWS = [{"id": i, "name": f"row {i}", "score": i / 4} for i in range(50)]


def read_pyarrow(path: Path, format: str) -> list[dict[str, Any]]:
    if format == "jsonl":
        return pa_json.read_json(path).to_pylist()
    if format == "csv":
        options = pa_csv.ParseOptions(newlines_in_values=True)
        return pa_csv.read_csv(path, parse_options=options).to_pylist()
    return pq.read_table(path).to_pylist()


def read_duckdb(path: Path, format: str) -> list[dict[str, Any]]:
    function = {
        "jsonl": "read_json_auto",
        "csv": "read_csv_auto",
        "parquet": "read_parquet",
    }[format]
    connection = duckdb.connect()
    try:
        result = connection.execute(f"SELECT * FROM {function}(?)", [str(path)])
        columns = [column[0] for column in result.description]
        return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]
    finally:
        connection.close()


def read_pandas(path: Path, format: str) -> list[dict[str, Any]]:
    if format == "jsonl":
        frame = pd.read_json(path, lines=True)
    elif format == "csv":
        frame = pd.read_csv(path)
    else:
        frame = pd.read_parquet(path)
    return frame.to_dict("records")


READERS = [
    pytest.param(read_pyarrow, id="pyarrow"),
    pytest.param(read_duckdb, id="duckdb"),
    pytest.param(read_pandas, id="pandas"),
]


def final_path(tmp_path: Path, output_type: type[Output]) -> Path:
    return tmp_path / f"rows{SUFFIXES[output_type.format]}"


def write_all(output: Output, rows: list[dict[str, Any]]) -> None:
    output.open(None)
    output.write(rows)
    output.commit()
    output.finish()


@pytest.fixture(scope="module", autouse=True)
def _start_reader_threads(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Read one file of each format with each reader before the leak checks count descriptors.

    pyarrow starts its thread pool on first use. The pool keeps a pipe open
    for the life of the process.
    """
    folder = tmp_path_factory.mktemp("warm-up")
    for output_type in (JsonLines, Csv, Parquet):
        path = final_path(folder, output_type)
        write_all(output_type(path), ROWS[:2])
        for reader in (read_pyarrow, read_duckdb, read_pandas):
            reader(path, output_type.format)


def strict_json(line: str) -> Any:
    """Parse one line, rejecting NaN and Infinity, which are not JSON."""

    def reject(constant: str) -> None:
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(line, parse_constant=reject)


# Every format ------------------------------------------------------------


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("output_type", FORMATS)
def test_output_round_trip(
    tmp_path: Path,
    output_type: type[Output],
    reader: Callable[[Path, str], list[dict[str, Any]]],
) -> None:
    path = final_path(tmp_path, output_type)
    write_all(output_type(path), ROWS)

    assert reader(path, output_type.format) == ROWS


@pytest.mark.parametrize("output_type", FORMATS)
def test_final_name_appears_at_finish(
    tmp_path: Path, output_type: type[Output]
) -> None:
    path = final_path(tmp_path, output_type)
    output = output_type(path)
    output.open(None)
    output.write(ROWS[:10])
    output.commit()
    output.write(ROWS[10:])

    assert not path.exists()

    output.finish()

    assert sorted(os.listdir(tmp_path)) == [path.name]
    assert read_pyarrow(path, output_type.format) == ROWS


@pytest.mark.parametrize("output_type", FORMATS)
def test_resume_after_crash(tmp_path: Path, output_type: type[Output]) -> None:
    path = final_path(tmp_path, output_type)
    first = output_type(path)
    first.open(None)
    first.write(ROWS[:20])
    position = first.commit()
    first.write(ROWS[20:30])
    first.close()

    second = output_type(path)
    second.open(position)
    second.write(ROWS[30:])
    second.finish()

    assert read_pyarrow(path, output_type.format) == ROWS[:20] + ROWS[30:]
    assert sorted(os.listdir(tmp_path)) == [path.name]


@pytest.mark.parametrize("output_type", FORMATS)
def test_resume_twice_from_one_position(
    tmp_path: Path, output_type: type[Output]
) -> None:
    path = final_path(tmp_path, output_type)
    first = output_type(path)
    first.open(None)
    first.write(ROWS[:20])
    position = first.commit()
    first.close()
    for crashed in (ROWS[20:25], ROWS[25:40]):
        again = output_type(path)
        again.open(position)
        again.write(crashed)
        again.commit()
        again.close()

    last = output_type(path)
    last.open(position)
    last.write(ROWS[40:])
    last.finish()

    assert read_pyarrow(path, output_type.format) == ROWS[:20] + ROWS[40:]


@pytest.mark.parametrize("output_type", FORMATS)
def test_resume_without_partial_raises(
    tmp_path: Path, output_type: type[Output]
) -> None:
    path = final_path(tmp_path, output_type)
    first = output_type(path)
    first.open(None)
    first.write(ROWS[:5])
    position = first.commit()
    first.discard()

    with pytest.raises(sa.CheckpointError, match="delete the checkpoint file"):
        output_type(path).open(position)


@pytest.mark.parametrize("output_type", FORMATS)
def test_discard_keeps_existing_final(
    tmp_path: Path, output_type: type[Output]
) -> None:
    path = final_path(tmp_path, output_type)
    path.write_bytes(b"earlier run\n")
    output = output_type(path)
    output.open(None)
    output.write(ROWS)
    output.commit()
    output.write(ROWS)

    output.discard()

    assert sorted(os.listdir(tmp_path)) == [path.name]
    assert path.read_bytes() == b"earlier run\n"


# CSV ---------------------------------------------------------------------


def test_csv_quotes_per_rfc_4180(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    rows = [
        {"id": 1, "text": "a,b"},
        {"id": 2, "text": 'say "hi"'},
        {"id": 3, "text": "first line\nsecond line"},
    ]
    write_all(Csv(path), rows)

    expected = (
        b'id,text\r\n1,"a,b"\r\n2,"say ""hi"""\r\n3,"first line\nsecond line"\r\n'
    )
    assert path.read_bytes() == expected
    assert read_pyarrow(path, "csv") == rows
    assert read_duckdb(path, "csv") == rows
    assert read_pandas(path, "csv") == rows


def test_csv_writes_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    rows = [
        {"id": 1, "city": "Zürich"},
        {"id": 2, "city": "東京"},
        {"id": 3, "city": "🙂 ok"},
    ]
    write_all(Csv(path), rows)

    assert (
        path.read_bytes().decode("utf-8")
        == "id,city\r\n1,Zürich\r\n2,東京\r\n3,🙂 ok\r\n"
    )
    assert read_pyarrow(path, "csv") == rows
    assert read_pandas(path, "csv") == rows


def test_csv_missing_key_empty_cell(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    write_all(Csv(path), [{"a": 1, "b": 2}, {"a": 3}, {"b": 4}])

    assert path.read_bytes() == b"a,b\r\n1,2\r\n3,\r\n,4\r\n"


def test_csv_unknown_key_raises(tmp_path: Path) -> None:
    output = Csv(tmp_path / "rows.csv")
    output.open(None)
    output.write([{"a": 1}])

    with pytest.raises(
        ValueError, match=r"\['z'\] that are not CSV columns \['a'\]"
    ) as error:
        output.write([{"a": 2, "z": 3}])
    output.discard()

    assert "extra='ignore'" in str(error.value)
    assert "columns=[...]" in str(error.value)


def test_csv_unknown_key_ignored(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    output = Csv(path, extra="ignore")
    output.open(None)
    output.write([{"a": 1}])
    output.write([{"a": 2, "z": 3}])
    output.finish()

    assert path.read_bytes() == b"a\r\n1\r\n2\r\n"


def test_csv_header_first_seen_order(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    write_all(Csv(path), [{"b": 1}, {"a": 2, "b": 3}, {"c": 4, "a": 5}])

    assert path.read_bytes() == b"b,a,c\r\n1,,\r\n3,2,\r\n,5,4\r\n"


def test_csv_declared_columns_header(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    write_all(Csv(path, columns=["y", "x"]), [{"x": 1, "y": 2}, {"x": 3}])

    assert path.read_bytes() == b"y,x\r\n2,1\r\n,3\r\n"


def test_csv_empty_first_batch(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    output = Csv(path)
    output.open(None)
    output.write([])
    output.write([{"a": 1}])
    output.finish()

    assert path.read_bytes() == b"a\r\n1\r\n"


def test_csv_resume_keeps_one_header(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    first = Csv(path)
    first.open(None)
    position = first.commit()
    first.close()

    second = Csv(path)
    second.open(position)
    second.write([{"a": 1}])
    position = second.commit()
    second.close()

    third = Csv(path)
    third.open(position)
    third.write([{"a": 2}])
    third.finish()

    assert path.read_bytes() == b"a\r\n1\r\n2\r\n"


def test_csv_rejects_unknown_extra(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"extra must be one of \('error', 'ignore', 'extend', 'dead_letter'\), got 'drop'",
    ):
        Csv(tmp_path / "rows.csv", extra="drop")


# Parquet -----------------------------------------------------------------


def parquet_rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def row_group_sizes(path: Path) -> list[int]:
    metadata = pq.read_metadata(path)
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def test_parquet_null_column_becomes_string(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_all(
        Parquet(path, row_group_rows=2),
        [{"a": None}, {"a": None}, {"a": "x"}, {"a": "y"}],
    )

    assert pq.read_schema(path) == pa.schema([("a", pa.string())])
    assert parquet_rows(path) == [{"a": None}, {"a": None}, {"a": "x"}, {"a": "y"}]


def test_parquet_null_column_across_commits(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path)
    output.open(None)
    output.write([{"id": 0, "a": None}])
    output.commit()
    output.write([{"id": 1, "a": "x"}])
    output.finish()

    assert pq.read_schema(path) == pa.schema([("id", pa.int64()), ("a", pa.string())])
    assert parquet_rows(path) == [{"id": 0, "a": None}, {"id": 1, "a": "x"}]


def test_parquet_ints_widen_to_floats(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_all(
        Parquet(path, row_group_rows=2), [{"a": 1}, {"a": 2}, {"a": 2.5}, {"a": 3.25}]
    )

    assert pq.read_schema(path) == pa.schema([("a", pa.float64())])
    assert parquet_rows(path) == [{"a": 1.0}, {"a": 2.0}, {"a": 2.5}, {"a": 3.25}]


def test_parquet_ints_then_floats_across_commits(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path)
    output.open(None)
    output.write([{"a": 1}, {"a": 2}])
    output.commit()
    output.write([{"a": 2.5}])
    output.commit()
    output.write([{"a": 4}])
    output.finish()

    assert pq.read_schema(path) == pa.schema([("a", pa.float64())])
    assert parquet_rows(path) == [{"a": 1.0}, {"a": 2.0}, {"a": 2.5}, {"a": 4.0}]


def test_parquet_late_column_nulls_before(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path, row_group_rows=2)
    output.open(None)
    output.write([{"a": 1}, {"a": 2}])
    output.commit()
    output.write([{"a": 3, "b": "x"}, {"b": "y", "a": 4}])
    output.finish()

    assert pq.read_schema(path) == pa.schema([("a", pa.int64()), ("b", pa.string())])
    assert parquet_rows(path) == [
        {"a": 1, "b": None},
        {"a": 2, "b": None},
        {"a": 3, "b": "x"},
        {"a": 4, "b": "y"},
    ]


def test_parquet_widened_file_one_schema(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path, row_group_rows=2)
    output.open(None)
    output.write([{"a": 1, "b": None}, {"a": 2, "b": None}])
    output.commit()
    output.write([{"a": 2.5, "b": "x", "c": True}])
    output.finish()

    expected = pa.schema([("a", pa.float64()), ("b", pa.string()), ("c", pa.bool_())])
    file = pq.ParquetFile(path)
    try:
        assert file.schema_arrow == expected
        assert file.metadata.num_rows == 3
    finally:
        file.close()
    assert read_duckdb(path, "parquet") == [
        {"a": 1.0, "b": None, "c": None},
        {"a": 2.0, "b": None, "c": None},
        {"a": 2.5, "b": "x", "c": True},
    ]


def test_parquet_row_group_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_all(Parquet(path, row_group_rows=4), ROWS[:10])

    assert row_group_sizes(path) == [4, 4, 2]
    assert parquet_rows(path) == ROWS[:10]


def test_parquet_row_groups_across_commits(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path, row_group_rows=4)
    output.open(None)
    for batch in (ROWS[0:3], ROWS[3:6], ROWS[6:9], ROWS[9:10]):
        output.write(batch)
        output.commit()
    output.finish()

    assert row_group_sizes(path) == [4, 4, 2]
    assert parquet_rows(path) == ROWS[:10]


def test_parquet_resume_drops_open_part(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    first = Parquet(path, row_group_rows=4)
    first.open(None)
    first.write(ROWS[:6])
    position = first.commit()
    first.write(ROWS[6:15])
    first.close()

    second = Parquet(path, row_group_rows=4)
    second.open(position)
    second.write(ROWS[15:20])
    second.finish()

    assert parquet_rows(path) == ROWS[:6] + ROWS[15:20]
    assert row_group_sizes(path) == [4, 4, 3]


def test_parquet_zstd_compression(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path, row_group_rows=16)
    output.open(None)
    output.write(ROWS[:20])
    output.commit()
    output.write(ROWS[20:])
    output.finish()

    metadata = pq.read_metadata(path)
    codecs = {
        metadata.row_group(i).column(j).compression
        for i in range(metadata.num_row_groups)
        for j in range(metadata.num_columns)
    }
    assert codecs == {"ZSTD"}


def test_parquet_mixed_types_in_batch(tmp_path: Path) -> None:
    output = Parquet(tmp_path / "rows.parquet")
    output.open(None)

    with pytest.raises(
        RowError, match=r"column 'b': value 'x' \(str\) does not fit int64.*str\(value\)"
    ):
        output.write([{"a": 1, "b": 1}, {"a": 2, "b": "x"}])
        output.commit()
    output.discard()


def test_parquet_mixed_types_across_commits(tmp_path: Path) -> None:
    output = Parquet(tmp_path / "rows.parquet")
    output.open(None)
    output.write([{"b": 1}])
    output.commit()

    with pytest.raises(
        RowError, match=r"column 'b': value 'x' \(str\) does not fit int64.*str\(value\)"
    ):
        output.write([{"b": "x"}])
        output.commit()
    output.discard()


def test_parquet_declared_schema(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    schema = pa.schema([("a", pa.int32()), ("b", pa.string())])
    write_all(Parquet(path, schema=schema), [{"a": 1}, {"a": 2, "b": "x"}])

    assert pq.read_schema(path) == schema
    assert parquet_rows(path) == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def test_parquet_declared_schema_extra_key(tmp_path: Path) -> None:
    output = Parquet(tmp_path / "rows.parquet", schema=pa.schema([("a", pa.int64())]))
    output.open(None)

    with pytest.raises(
        RowError, match=r"keys \['z'\] are not in the schema \(a\); add them"
    ):
        output.write([{"a": 1, "z": 2}])
        output.commit()
    output.discard()


def test_parquet_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    output = Parquet(path)
    output.open(None)
    output.finish()

    assert pq.read_metadata(path).num_rows == 0
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_parquet_failed_merge_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    path.mkdir()
    output = Parquet(path)
    output.open(None)
    output.write([{"a": 1}])
    output.commit()
    output.write([{"a": 2}])

    with pytest.raises(IsADirectoryError):
        output.finish()
    output.discard()

    assert sorted(os.listdir(tmp_path)) == [path.name]


# JSON Lines --------------------------------------------------------------


def jsonl_rows(path: Path) -> list[Any]:
    return [strict_json(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_non_finite_become_null(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [
        {"x": float("nan")},
        {"x": float("inf")},
        {"x": float("-inf")},
        {"x": [1.0, float("nan")], "y": {"z": float("inf")}},
        {"x": np.float32("nan")},
    ]
    write_all(JsonLines(path), rows)

    assert jsonl_rows(path) == [
        {"x": None},
        {"x": None},
        {"x": None},
        {"x": [1.0, None], "y": {"z": None}},
        {"x": None},
    ]


def test_jsonl_decimal_becomes_string(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_all(
        JsonLines(path), [{"price": Decimal("1.10")}, {"price": Decimal("-0.000001")}]
    )

    assert jsonl_rows(path) == [{"price": "1.10"}, {"price": "-0.000001"}]


def test_jsonl_numpy_scalars(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    row = {
        "int64": np.int64(7),
        "uint8": np.uint8(255),
        "float32": np.float32(1.5),
        "float64": np.float64(0.25),
        "bool": np.bool_(True),
    }
    write_all(JsonLines(path), [row])

    assert jsonl_rows(path) == [
        {"int64": 7, "uint8": 255, "float32": 1.5, "float64": 0.25, "bool": True}
    ]


def test_jsonl_numpy_arrays(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    grid = np.arange(6).reshape(2, 3)
    row = {
        "vector": np.arange(3),
        "grid": grid,
        "column": grid[:, 1],
        "transposed": grid.T,
        "floats": np.array([0.5, np.nan, np.inf]),
        "words": np.array(["a", "b"]),
    }
    write_all(JsonLines(path), [row])

    assert jsonl_rows(path) == [
        {
            "vector": [0, 1, 2],
            "grid": [[0, 1, 2], [3, 4, 5]],
            "column": [1, 4],
            "transposed": [[0, 3], [1, 4], [2, 5]],
            "floats": [0.5, None, None],
            "words": ["a", "b"],
        }
    ]


def test_jsonl_unencodable_value_raises(tmp_path: Path) -> None:
    output = JsonLines(tmp_path / "rows.jsonl")
    output.open(None)

    with pytest.raises(
        RowError, match="column 'x': cannot encode a value of type object as JSON"
    ):
        output.write([{"x": object()}])
    output.discard()


# Through Aggregator ------------------------------------------------------


def test_aggregator_outputs_match_sequential(tmp_path: Path) -> None:
    paths = {format: tmp_path / f"rows{suffix}" for format, suffix in SUFFIXES.items()}
    aggregator = sa.Aggregator(outputs=list(paths.values()), workers=2, progress=False)
    summary = aggregator.run(jobs.square, range(500))

    expected = [jobs.square(x) for x in range(500)]
    assert summary.counts["ok"] == 500
    for format, path in paths.items():
        assert sorted(read_pyarrow(path, format), key=lambda row: row["x"]) == expected
    assert sorted(os.listdir(tmp_path)) == ["rows.csv", "rows.jsonl", "rows.parquet"]


def test_aggregator_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"'\.txt'; use one of \.jsonl, \.ndjson, \.json, \.csv, \.parquet, \.pq, "
        r"\.arrow, \.feather",
    ):
        sa.Aggregator(outputs=[tmp_path / "rows.txt"], progress=False)


def test_aggregator_duplicate_output_path(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    same = tmp_path / "sub" / ".." / "rows.jsonl"

    with pytest.raises(ValueError, match="two outputs write to .*rows.jsonl"):
        sa.Aggregator(outputs=[tmp_path / "rows.jsonl", same], progress=False)


@pytest.mark.parametrize("suffix", SUFFIXES.values(), ids=SUFFIXES.keys())
def test_aggregator_output_is_directory(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rows{suffix}"
    path.mkdir()
    aggregator = sa.Aggregator(outputs=[path], workers=2, progress=False)

    with pytest.raises(
        sa.OutputError, match=re.escape(f"writing '{path}' failed: IsADirectoryError")
    ):
        aggregator.run(jobs.square, range(100))

    assert sorted(os.listdir(tmp_path)) == [path.name]
    assert os.listdir(path) == []


@pytest.mark.parametrize("suffix", SUFFIXES.values(), ids=SUFFIXES.keys())
def test_aggregator_output_folder_missing(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "missing" / f"rows{suffix}"
    aggregator = sa.Aggregator(outputs=[path], workers=2, progress=False)

    with pytest.raises(
        sa.OutputError, match=re.escape(f"the folder '{path.parent}' does not exist; create it first")
    ):
        aggregator.run(jobs.square, range(100))

    assert os.listdir(tmp_path) == []


def test_aggregator_failed_output_discards_others(tmp_path: Path) -> None:
    bad = tmp_path / "rows.csv"
    bad.mkdir()
    good = tmp_path / "rows.jsonl"
    aggregator = sa.Aggregator(outputs=[bad, good], workers=2, progress=False)

    with pytest.raises(sa.OutputError, match=re.escape(f"writing '{bad}' failed")):
        aggregator.run(jobs.square, range(100))

    assert not good.exists()
    assert sorted(os.listdir(tmp_path)) == [bad.name]


def test_aggregator_csv_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    aggregator = sa.Aggregator(
        outputs=[Csv(path, columns=["x"])], workers=2, progress=False
    )

    with pytest.raises(
        sa.OutputError,
        match=re.escape(
            f"writing '{path}' failed: ValueError: row has keys ['square']"
        ),
    ):
        aggregator.run(jobs.square, range(100))

    assert os.listdir(tmp_path) == []


def test_aggregator_second_output_fails_open(tmp_path: Path) -> None:
    good = tmp_path / "rows.jsonl"
    bad = tmp_path / "missing" / "rows.csv"
    aggregator = sa.Aggregator(outputs=[good, bad], workers=2, progress=False)

    with pytest.raises(
        sa.OutputError, match=re.escape(f"the folder '{bad.parent}' does not exist; create it first")
    ):
        aggregator.run(jobs.square, range(100))

    assert os.listdir(tmp_path) == []
