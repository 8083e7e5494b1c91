"""Every output format, read back by pyarrow, DuckDB, pandas and polars, and the type mapping."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import math
import os
import pickle
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_dataset
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest

import syncagg as sa
from syncagg.outputs import (
    ArrowIpc,
    Csv,
    FormatError,
    Json,
    JsonLines,
    Output,
    Parquet,
    RejectedRow,
    RowError,
    from_path,
)
from syncagg.outputs.arrowconvert import TableConverter
from syncagg.outputs.arrowjson import encode_lines
from tests import jobs, output_jobs

SUFFIXES = {"json": ".json", "jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet", "arrow": ".arrow"}
FORMATS = [pytest.param(cls, id=cls.format) for cls in (Json, JsonLines, Csv, Parquet, ArrowIpc)]
ROWS = [{"id": i, "name": f"row {i}", "score": i / 4} for i in range(30)]


def read_pyarrow(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix
    if suffix == ".jsonl":
        return pa_json.read_json(path).to_pylist()
    if suffix == ".json":
        # pyarrow.json reads only JSON Lines, so the array goes through json.
        return pa.Table.from_pylist(json.loads(path.read_text())).to_pylist()
    if suffix == ".csv":
        options = pa_csv.ParseOptions(newlines_in_values=True)
        return pa_csv.read_csv(path, parse_options=options).to_pylist()
    if suffix == ".arrow":
        with pa.OSFile(str(path), "rb") as source:
            return pa.ipc.open_file(source).read_all().to_pylist()
    return pq.read_table(path).to_pylist()


def read_duckdb(path: Path) -> list[dict[str, Any]]:
    connection = duckdb.connect()
    try:
        if path.suffix == ".arrow":
            # DuckDB's own Arrow IPC reader is an extension fetched at run
            # time, so the file goes through a pyarrow dataset.
            dataset = pa_dataset.dataset(path, format="arrow")  # noqa: F841 - scanned by name
            result = connection.execute("SELECT * FROM dataset")
        else:
            function = {
                ".json": "read_json_auto",
                ".jsonl": "read_json_auto",
                ".csv": "read_csv_auto",
                ".parquet": "read_parquet",
            }[path.suffix]
            result = connection.execute(f"SELECT * FROM {function}(?)", [str(path)])
        columns = [column[0] for column in result.description]
        return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]
    finally:
        connection.close()


def read_pandas(path: Path) -> list[dict[str, Any]]:
    readers: dict[str, Callable[[Path], pd.DataFrame]] = {
        ".json": pd.read_json,
        ".jsonl": lambda p: pd.read_json(p, lines=True),
        ".csv": pd.read_csv,
        ".parquet": pd.read_parquet,
        ".arrow": pd.read_feather,
    }
    return readers[path.suffix](path).to_dict("records")  # type: ignore[no-any-return]


def read_polars(path: Path) -> list[dict[str, Any]]:
    readers: dict[str, Callable[[Path], pl.DataFrame]] = {
        ".json": pl.read_json,
        ".jsonl": pl.read_ndjson,
        ".csv": pl.read_csv,
        ".parquet": pl.read_parquet,
        ".arrow": pl.read_ipc,
    }
    return readers[path.suffix](path).to_dicts()


READERS = [
    pytest.param(reader, id=reader.__name__.removeprefix("read_"))
    for reader in (read_pyarrow, read_duckdb, read_pandas, read_polars)
]


def path_for(tmp_path: Path, output_type: type[Output]) -> Path:
    return tmp_path / f"rows{SUFFIXES[output_type.format]}"


def write_all(output: Output, rows: list[dict[str, Any]]) -> None:
    output.open(None)
    output.write(rows)
    output.commit()
    output.finish()


def strict_json(text: str) -> Any:
    """Parse JSON text, rejecting the NaN and Infinity tokens that JSON does not have."""

    def reject(constant: str) -> None:
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module", autouse=True)
def _start_reader_threads(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Read each format once with each reader before the leak checks count descriptors.

    pyarrow, DuckDB and polars start thread pools on first use, which keep
    descriptors open for the life of the process.
    """
    folder = tmp_path_factory.mktemp("warm-up")
    for output_type in (Json, JsonLines, Csv, Parquet, ArrowIpc):
        path = path_for(folder, output_type)
        write_all(output_type(path), ROWS[:2])
        for reader in (read_pyarrow, read_duckdb, read_pandas, read_polars):
            reader(path)
    # The JSON and CSV encoders of tables use pyarrow's compute functions.
    table = output_jobs.arrow_block(0)
    for output_type in (JsonLines, Csv):
        output = output_type(folder / f"table{SUFFIXES[output_type.format]}")
        output.open(None)
        output.write_table(table)
        output.finish()


# Every format, every reader ----------------------------------------------


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("output_type", FORMATS)
def test_format_round_trip(
    tmp_path: Path, output_type: type[Output], reader: Callable[[Path], list[dict[str, Any]]]
) -> None:
    path = path_for(tmp_path, output_type)
    write_all(output_type(path), ROWS)

    assert reader(path) == ROWS


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("output_type", FORMATS)
def test_format_resumed_file_reads(
    tmp_path: Path, output_type: type[Output], reader: Callable[[Path], list[dict[str, Any]]]
) -> None:
    path = path_for(tmp_path, output_type)
    first = output_type(path)
    first.open(None)
    first.write(ROWS[:10])
    position = first.commit()
    first.write(ROWS[10:20])
    first.close()

    second = output_type(path)
    second.open(position)
    second.write(ROWS[20:])
    second.finish()

    assert reader(path) == ROWS[:10] + ROWS[20:]
    assert sorted(os.listdir(tmp_path)) == [path.name]


@pytest.mark.parametrize("output_type", FORMATS)
def test_format_resume_after_seal(tmp_path: Path, output_type: type[Output]) -> None:
    """A crash between seal and publish: the next run seals again from the checkpoint."""
    path = path_for(tmp_path, output_type)
    first = output_type(path)
    first.open(None)
    first.write(ROWS[:10])
    position = first.commit()
    first.seal()
    first.close()

    assert not path.exists()

    second = output_type(path)
    second.open(position)
    second.write(ROWS[10:])
    second.finish()

    assert read_pyarrow(path) == ROWS
    assert sorted(os.listdir(tmp_path)) == [path.name]


@pytest.mark.parametrize("output_type", [Json, JsonLines], ids=["json", "jsonl"])
def test_json_empty_file_reads(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output = output_type(path)
    output.open(None)
    output.finish()

    assert read_duckdb(path) == []
    assert read_pandas(path) == []


@pytest.mark.parametrize("reader", READERS)
def test_json_empty_array_reads(tmp_path: Path, reader: Callable[[Path], list[dict[str, Any]]]) -> None:
    path = tmp_path / "rows.json"
    output = Json(path)
    output.open(None)
    output.finish()

    assert path.read_bytes() == b"[\n]\n"
    assert strict_json(path.read_text()) == []
    assert reader(path) == []


@pytest.mark.parametrize("reader", READERS)
def test_csv_declared_columns_empty_reads(
    tmp_path: Path, reader: Callable[[Path], list[dict[str, Any]]]
) -> None:
    path = tmp_path / "rows.csv"
    aggregator = sa.Aggregator(
        outputs=[Csv(path, columns=["x", "y"])], workers=sa.Threads(1), progress=False
    )

    summary = aggregator.run(jobs.always_fail, range(3))

    assert summary.counts["failed"] == 3
    assert path.read_bytes() == b"x,y\r\n"
    assert reader(path) == []


def test_csv_empty_without_columns_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rows.csv"
    output = Csv(path)
    output.open(None)

    with caplog.at_level(logging.WARNING, logger="syncagg.outputs"):
        output.finish()

    assert path.read_bytes() == b""
    assert read_duckdb(path) == []
    assert [record.getMessage() for record in caplog.records] == [
        f"the CSV output {path} received no rows and has no declared columns, so the file is "
        "empty (0 bytes). pandas, pyarrow and polars reject an empty CSV file, so pass "
        "Csv(path, columns=[...]) to write a header without rows"
    ]


@pytest.mark.parametrize("output_type", [Parquet, ArrowIpc], ids=["parquet", "arrow"])
def test_columnar_empty_file_has_schema(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    output = output_type(path, schema=schema)  # type: ignore[call-arg]
    output.open(None)
    output.finish()

    assert read_duckdb(path) == []
    assert read_polars(path) == []
    assert pa_dataset.dataset(path, format=output_type.format).schema == schema


@pytest.mark.parametrize("output_type", FORMATS)
def test_format_seal_rejects_folder(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output = output_type(path)
    output.open(None)
    output.write(ROWS)
    path.mkdir()

    with pytest.raises(IsADirectoryError, match="is a folder; remove it or choose another path"):
        output.seal()
    output.discard()

    assert sorted(os.listdir(tmp_path)) == [path.name]


# Choosing a format --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "output_type"),
    [
        ("a.json", Json),
        ("a.JSONL", JsonLines),
        ("a.ndjson", JsonLines),
        ("a.csv", Csv),
        ("a.pq", Parquet),
        ("a.arrow", ArrowIpc),
        ("a.feather", ArrowIpc),
    ],
)
def test_suffix_picks_format(tmp_path: Path, name: str, output_type: type[Output]) -> None:
    output = from_path(tmp_path / name)

    assert type(output) is output_type


def test_format_by_name(tmp_path: Path) -> None:
    output = sa.make_output(tmp_path / "rows.data", format="arrow", compression="zstd")

    assert type(output) is ArrowIpc
    assert output.compression == "zstd"


def test_unknown_format_name(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="unknown output format 'xml'; use one of jsonl, json, csv"):
        sa.make_output(tmp_path / "rows.xml", format="xml")


def test_registry_rejects_taken_name() -> None:
    class Other(JsonLines):
        format = "csv"

    with pytest.raises(FormatError, match="'csv' is already registered by syncagg.outputs.csvfile.Csv"):
        sa.register_format(Other)


# Types -----------------------------------------------------------------------

TYPED = [output_jobs.typed_row(i) for i in range(2)]


@pytest.mark.parametrize("output_type", [Parquet, ArrowIpc], ids=["parquet", "arrow"])
def test_columnar_type_mapping(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    write_all(output_type(path), TYPED)
    with pa.OSFile(str(path), "rb") as source:
        table = pa.ipc.open_file(source).read_all() if output_type is ArrowIpc else pq.read_table(path)

    assert table.schema == pa.schema(
        [
            ("int", pa.int64()),
            ("float", pa.float32()),
            ("flag", pa.bool_()),
            ("vector", pa.list_(pa.int64())),
            ("when", pa.timestamp("us")),
            ("when_utc", pa.timestamp("us", tz="UTC")),
            ("day", pa.date32()),
            ("price", pa.decimal128(4, 2)),
            ("blob", pa.binary()),
            ("nothing", pa.null()),
            ("nested", pa.struct([("a", pa.int64()), ("tags", pa.list_(pa.string()))])),
            ("ratio", pa.float64()),
        ]
    )
    first, second = table.to_pylist()
    assert first["vector"] == [0, 1, 2]
    assert first["when"] == datetime.datetime(2024, 5, 1, 12, 30, 0)
    assert first["when_utc"] == datetime.datetime(2024, 5, 1, 12, 30, 0, tzinfo=datetime.UTC)
    assert second["day"] == datetime.date(2024, 5, 2)
    assert second["price"] == Decimal("11.25")
    assert second["blob"] == b"\x01\xff"
    assert first["nested"] == {"a": 0, "tags": ["x", "y"]}
    assert math.isnan(first["ratio"])
    assert second["ratio"] == math.inf


def test_parquet_types_in_duckdb(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_all(Parquet(path), TYPED)

    row = read_duckdb(path)[1]

    assert row["int"] == 1
    assert row["vector"] == [1, 2, 3]
    assert row["when"] == datetime.datetime(2024, 5, 1, 12, 30, 1)
    assert row["price"] == Decimal("11.25")
    assert row["blob"] == b"\x01\xff"
    assert row["nested"] == {"a": 1, "tags": ["x", "y"]}
    assert row["ratio"] == math.inf


@pytest.mark.parametrize("output_type", [Json, JsonLines], ids=["json", "jsonl"])
def test_json_type_mapping(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    write_all(output_type(path), TYPED[:1])
    text = path.read_text(encoding="utf-8")
    rows = strict_json(text) if output_type is Json else [strict_json(line) for line in text.splitlines()]

    assert rows == [
        {
            "int": 0,
            "float": 0.5,
            "flag": True,
            "vector": [0, 1, 2],
            "when": "2024-05-01T12:30:00",
            "when_utc": "2024-05-01T12:30:00+00:00",
            "day": "2024-05-01",
            "price": "10.25",
            "blob": base64.b64encode(b"\x00\xff").decode(),
            "nothing": None,
            "nested": {"a": 0, "tags": ["x", "y"]},
            "ratio": None,
        }
    ]


def test_csv_type_mapping(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    write_all(Csv(path), TYPED)

    assert path.read_bytes().decode("utf-8").splitlines()[1:] == [
        '0,0.5,true,"[0,1,2]",2024-05-01T12:30:00,2024-05-01T12:30:00+00:00,2024-05-01,'
        '10.25,AP8=,,"{""a"":0,""tags"":[""x"",""y""]}",nan',
        '1,0.5,false,"[1,2,3]",2024-05-01T12:30:01,2024-05-01T12:30:01+00:00,2024-05-02,'
        '11.25,Af8=,,"{""a"":1,""tags"":[""x"",""y""]}",inf',
    ]


def test_csv_types_in_duckdb(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    write_all(Csv(path), TYPED)

    row = read_duckdb(path)[0]

    assert row["flag"] is True
    assert row["when"] == datetime.datetime(2024, 5, 1, 12, 30, 0)
    assert row["day"] == datetime.date(2024, 5, 1)
    assert math.isnan(row["ratio"])


@pytest.mark.parametrize("output_type", [Json, JsonLines], ids=["json", "jsonl"])
def test_json_nan_as_string(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    rows = [{"x": float("nan"), "y": [float("inf"), 1.0], "z": np.array([-np.inf, 2.0])}]
    write_all(output_type(path, nan="string"), rows)  # type: ignore[call-arg]
    text = path.read_text(encoding="utf-8")
    parsed = strict_json(text) if output_type is Json else [strict_json(text)]

    assert parsed == [{"x": "NaN", "y": ["Infinity", 1.0], "z": ["-Infinity", 2.0]}]


def test_json_array_text(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    output = Json(path)
    output.open(None)
    output.write([{"a": 1}])
    output.write([{"a": 2}, {"a": 3}])
    output.finish()

    assert path.read_bytes() == b'[\n{"a":1},\n{"a":2},\n{"a":3}\n]\n'


def test_json_resume_cuts_closing_bracket(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    first = Json(path, live=True)
    first.open(None)
    first.write([{"a": 1}])
    position = first.commit()
    first.seal()

    assert path.read_bytes() == b'[\n{"a":1}\n]\n'

    second = Json(path, live=True)
    second.open(position)
    second.write([{"a": 2}])
    second.finish()

    assert path.read_bytes() == b'[\n{"a":1},\n{"a":2}\n]\n'


def test_jsonl_error_names_column(tmp_path: Path) -> None:
    output = JsonLines(tmp_path / "rows.jsonl")
    output.open(None)

    with pytest.raises(RowError, match=r"column 'when': cannot encode a value of type complex as JSON; return str"):
        output.write([{"id": 1, "when": complex(1, 2)}])
    output.discard()


@pytest.mark.parametrize("output_type", [Json, JsonLines], ids=["json", "jsonl"])
def test_json_int_beyond_64_bits(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    output = output_type(path, invalid="dead_letter")  # type: ignore[call-arg]
    output.open(None)
    output.write([{"v": 2**64 - 1}, {"v": 2**64}, {"v": [-(2**63) - 1]}, {"v": -(2**63)}])
    rejected = output.take_rejected()
    output.finish()
    text = path.read_text(encoding="utf-8")
    rows = strict_json(text) if output_type is Json else [strict_json(line) for line in text.splitlines()]

    assert rows == [{"v": 2**64 - 1}, {"v": -(2**63)}]
    assert [r.index for r in rejected] == [1, 2]
    assert [r.reason for r in rejected] == [
        "column 'v': an integer is outside -2**63 to 2**64 - 1, the range that the JSON "
        "encoder (orjson) writes; return such values as str(value) in the job function"
    ] * 2


def _nested(levels: int) -> list[Any]:
    outer = inner = []
    for _ in range(levels - 1):
        inner.append([])
        inner = inner[0]
    return outer


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (np.longdouble(1.5), "cannot encode a numpy longdouble as JSON, which has no Python type of the same precision; convert it with float(value)"),
        ({(1, 2): 3}, "a dict in it has a key that is not a str, int, float, bool, None or date, such as a tuple; JSON keys are strings"),
        (_nested(300), "it is nested more than 254 levels deep, deeper than orjson writes; flatten it"),
    ],
    ids=["longdouble", "tuple-key", "deep"],
)
def test_json_row_error_says_what_to_do(tmp_path: Path, value: Any, reason: str) -> None:
    path = tmp_path / "rows.jsonl"
    output = JsonLines(path, invalid="dead_letter")
    output.open(None)
    output.write([{"v": 1}, {"v": value}])
    rejected = output.take_rejected()
    output.finish()

    assert [strict_json(line) for line in path.read_text(encoding="utf-8").splitlines()] == [{"v": 1}]
    assert [r.index for r in rejected] == [1]
    assert rejected[0].reason.startswith(f"column 'v': {reason}")


def test_jsonl_dead_letter_keeps_others(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    output = JsonLines(path, invalid="dead_letter")
    output.open(None)
    output.write([{"a": 1}, {"a": object()}, {"a": 3}])
    rejected = output.take_rejected()
    output.finish()

    assert path.read_bytes() == b'{"a":1}\n{"a":3}\n'
    assert [r.index for r in rejected] == [1]
    assert rejected[0].reason.startswith("column 'a': cannot encode a value of type object")


# Declared and inferred schemas ---------------------------------------------------


def test_parquet_declared_int_rejects_fraction(tmp_path: Path) -> None:
    output = Parquet(tmp_path / "rows.parquet", schema=pa.schema([("a", pa.int64())]))
    output.open(None)

    with pytest.raises(
        RowError,
        match=r"column 'a': value 1.5 \(float\) does not fit the declared type int64 .*truncated",
    ):
        output.write([{"a": 1}, {"a": 1.5}])
    output.discard()


def test_parquet_declared_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    schema = pa.schema([("a", pa.int32()), ("when", pa.timestamp("us", tz="UTC"))])
    output = Parquet(path, schema=schema, invalid="dead_letter")
    output.open(None)
    output.write(
        [
            {"a": 1, "when": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)},
            {"a": 2.5},
            {"a": 2**40},
            {"a": 3, "when": datetime.datetime(2024, 1, 1)},
            {"a": 4, "extra": 1},
            {"a": 5},
        ]
    )
    reasons = {r.index: r.reason for r in output.take_rejected()}
    output.finish()

    assert pq.read_table(path).column("a").to_pylist() == [1, 5]
    assert sorted(reasons) == [1, 2, 3, 4]
    assert "value 2.5 (float) does not fit the declared type int32" in reasons[1]
    assert "value 1099511627776 (int) does not fit the declared type int32" in reasons[2]
    assert "which has a time zone" in reasons[3]
    assert reasons[4].startswith("keys ['extra'] are not in the schema (a, when)")


def test_parquet_naive_and_aware_rejected(tmp_path: Path) -> None:
    output = Parquet(tmp_path / "rows.parquet")
    output.open(None)
    naive = datetime.datetime(2024, 1, 1)
    aware = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)

    with pytest.raises(RowError, match=r"column 't': value .* does not fit timestamp\[us\], which has no time zone"):
        output.write([{"t": naive}, {"t": aware}])
    output.discard()


def test_parquet_zones_share_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    output = Parquet(path)
    output.open(None)
    output.write([{"t": datetime.datetime(2024, 1, 1, 12, tzinfo=plus_two)}])
    output.commit()
    output.write([{"t": datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.UTC)}])
    output.finish()

    table = pq.read_table(path)
    assert table.schema == pa.schema([("t", pa.timestamp("us", tz="+02:00"))])
    assert table.column("t").to_pylist() == [
        datetime.datetime(2024, 1, 1, 10, tzinfo=datetime.UTC),
        datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.UTC),
    ]


def test_parquet_non_str_key(tmp_path: Path) -> None:
    output = Parquet(tmp_path / "rows.parquet")
    output.open(None)

    with pytest.raises(RowError, match=r"key 1 is a int, but column names must be str"):
        output.write([{1: "a"}])
    output.discard()


def test_parquet_late_key_in_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_all(Parquet(path), [{"a": 1}, {"a": 2, "b": "x"}])

    assert pq.read_table(path).to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def test_parquet_2d_array_nested_lists(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_all(Parquet(path), [{"m": np.arange(4).reshape(2, 2)}])

    assert pq.read_table(path).to_pylist() == [{"m": [[0, 1], [2, 3]]}]


def test_parquet_row_group_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    rows = [{"text": "x" * 1000} for _ in range(100)]
    write_all(Parquet(path, row_group_bytes=20_000), rows)

    metadata = pq.read_metadata(path)
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sum(sizes) == 100
    assert max(sizes) <= 20


def test_parquet_statistics_on(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_all(Parquet(path), ROWS)

    statistics = pq.read_metadata(path).row_group(0).column(0).statistics
    assert statistics.has_min_max
    assert statistics.min == 0
    assert statistics.max == 29


def test_arrow_batches_and_codec(tmp_path: Path) -> None:
    path = tmp_path / "rows.arrow"
    write_all(ArrowIpc(path, batch_rows=8, compression="zstd"), ROWS)

    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_file(source)
        sizes = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        assert reader.read_all().to_pylist() == ROWS
    assert sizes == [8, 8, 8, 6]


def test_arrow_widens_across_parts(tmp_path: Path) -> None:
    path = tmp_path / "rows.arrow"
    output = ArrowIpc(path)
    output.open(None)
    output.write([{"a": 1, "b": None}])
    output.commit()
    output.write([{"a": 2.5, "b": "x"}])
    output.finish()

    assert read_pyarrow(path) == [{"a": 1.0, "b": None}, {"a": 2.5, "b": "x"}]


# Integers that a widening must keep ------------------------------------------

COLUMNAR = [pytest.param(Parquet, id="parquet"), pytest.param(ArrowIpc, id="arrow")]
BEYOND_FLOAT = 2**53 + 1


def read_columnar(path: Path) -> pa.Table:
    if path.suffix == ".arrow":
        with pa.OSFile(str(path), "rb") as source:
            return pa.ipc.open_file(source).read_all()
    return pq.read_table(path)


def write_batches(output: Output, batches: list[list[dict[str, Any]]]) -> list[RejectedRow]:
    """Write each batch and commit after it; return the rejected rows and finish the file."""
    output.open(None)
    rejected = []
    for batch in batches:
        output.write(batch)
        rejected += output.take_rejected()
        output.commit()
    output.finish()
    return rejected


@pytest.mark.parametrize("output_type", COLUMNAR)
@pytest.mark.parametrize("split", [False, True], ids=["one-batch", "two-batches"])
def test_columnar_big_int_keeps_int_type(tmp_path: Path, output_type: type[Output], split: bool) -> None:
    path = path_for(tmp_path, output_type)
    rows = [{"v": BEYOND_FLOAT}, {"v": 0.5}, {"v": 3}]
    batches = [rows[:1], rows[1:]] if split else [rows]

    rejected = write_batches(output_type(path, invalid="dead_letter"), batches)  # type: ignore[call-arg]

    table = read_columnar(path)
    assert table.schema == pa.schema([("v", pa.int64())])
    assert table.column("v").to_pylist() == [BEYOND_FLOAT, 3]
    assert [row.row for row in rejected] == [{"v": 0.5}]
    assert rejected[0].reason == (
        "column 'v': value 0.5 (float) would widen int64 to double, but an earlier row contains "
        "the integer 9007199254740993, which double cannot hold exactly; return one type per "
        "column from the job function, for example float(value) in every row if rounding is "
        "acceptable"
    )


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_columnar_big_int_float_raises(tmp_path: Path, output_type: type[Output]) -> None:
    output = output_type(path_for(tmp_path, output_type))
    output.open(None)
    output.write([{"v": -BEYOND_FLOAT}])

    with pytest.raises(RowError, match=r"value 0.5 \(float\) would widen int64 to double, .* -9007199254740993"):
        output.write([{"v": 0.5}])
    output.discard()


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_columnar_float_rejects_big_int(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)

    rejected = write_batches(
        output_type(path, invalid="dead_letter"),  # type: ignore[call-arg]
        [[{"v": 0.5}], [{"v": BEYOND_FLOAT}, {"v": 2**53}]],
    )

    assert read_columnar(path).column("v").to_pylist() == [0.5, float(2**53)]
    assert [row.row for row in rejected] == [{"v": BEYOND_FLOAT}]
    assert rejected[0].reason.startswith(
        "column 'v': value 9007199254740993 (int) would change when cast to double, the common "
        "type of it and earlier rows (Integer value 9007199254740993 not in range"
    )


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_columnar_exact_ints_widen(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)

    rejected = write_batches(output_type(path), [[{"v": -(2**53)}], [{"v": 0.5}]])

    assert rejected == []
    assert read_columnar(path).column("v").to_pylist() == [-float(2**53), 0.5]


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_columnar_nested_big_int_kept(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    rows = [
        {"v": [1, BEYOND_FLOAT], "s": {"a": BEYOND_FLOAT}},
        {"v": [0.5], "s": {"a": 1}},
        {"v": [2], "s": {"a": 0.5}},
        {"v": [3], "s": {"a": 2, "b": "x"}},
    ]

    rejected = write_batches(output_type(path, invalid="dead_letter"), [[row] for row in rows])  # type: ignore[call-arg]

    assert read_columnar(path).to_pylist() == [
        {"v": [1, BEYOND_FLOAT], "s": {"a": BEYOND_FLOAT, "b": None}},
        {"v": [3], "s": {"a": 2, "b": "x"}},
    ]
    assert [row.row for row in rejected] == rows[1:3]
    assert "would widen int64 to double" in rejected[0].reason
    assert "would widen int64 to double" in rejected[1].reason


def test_converter_state_restores_ranges() -> None:
    rejected: list[str] = []
    first = TableConverter(None, lambda index, row, reason: rejected.append(reason))
    first.from_rows([{"v": BEYOND_FLOAT, "w": 1}])
    state = pickle.loads(pickle.dumps(first.state()))

    resumed = TableConverter(None, lambda index, row, reason: rejected.append(reason))
    resumed.schema = first.schema
    resumed.restore(state)
    table = resumed.from_rows([{"v": 0.5, "w": 0.5}, {"v": 2, "w": 2}])

    assert table is not None
    assert table.to_pylist() == [{"v": 2, "w": 2.0}]
    assert len(rejected) == 1
    assert rejected[0].startswith("column 'v': value 0.5 (float) would widen int64 to double")


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_columnar_resume_keeps_big_int(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    first = output_type(path)
    first.open(None)
    first.write([{"v": BEYOND_FLOAT}])
    position = first.commit()
    first.close()

    second = output_type(path, invalid="dead_letter")  # type: ignore[call-arg]
    second.open(position)
    second.write([{"v": 0.5}])
    rejected = second.take_rejected()
    second.finish()

    assert read_columnar(path).column("v").to_pylist() == [BEYOND_FLOAT]
    assert [row.row for row in rejected] == [{"v": 0.5}]


@pytest.mark.parametrize("output_type", COLUMNAR)
@pytest.mark.parametrize(
    "value", [2**63, 2**64, -(2**63) - 1, [1, 2**70], {"a": 2**64}], ids=["2**63", "2**64", "below", "list", "struct"]
)
def test_columnar_int_beyond_int64(tmp_path: Path, output_type: type[Output], value: Any) -> None:
    path = path_for(tmp_path, output_type)

    rejected = write_batches(
        output_type(path, invalid="dead_letter"),  # type: ignore[call-arg]
        [[{"id": 1, "v": value}, {"id": 2}]],
    )

    assert read_columnar(path).column("id").to_pylist() == [2]
    assert [row.index for row in rejected] == [0]
    assert "outside the int64 range (-2**63 to 2**63 - 1)" in rejected[0].reason
    assert rejected[0].reason.startswith(f"column 'v': value {value!r} ({type(value).__qualname__}) ")


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_columnar_int_beyond_int64_raises(tmp_path: Path, output_type: type[Output]) -> None:
    output = output_type(path_for(tmp_path, output_type))
    output.open(None)

    with pytest.raises(
        RowError,
        match=r"column 'v': value 18446744073709551616 \(int\) is outside the int64 range .* Decimal\(value\)",
    ):
        output.write([{"v": 2**64}])
    output.discard()


def test_columnar_big_decimal_fits(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_all(Parquet(path), [{"v": Decimal(2**64)}])

    assert pq.read_table(path).column("v").to_pylist() == [Decimal(2**64)]


# Declared schemas take values of their own kind --------------------------------

DECLARED = pa.schema(
    [
        ("n", pa.int64()),
        ("x", pa.float64()),
        ("s", pa.string()),
        ("day", pa.date32()),
        ("flag", pa.bool_()),
        ("point", pa.struct([("a", pa.int64())])),
        ("tags", pa.list_(pa.int64())),
    ]
)


@pytest.mark.parametrize("output_type", COLUMNAR)
@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"n": "12"}, "column 'n': value '12' (str) does not fit the declared type int64: string values do not convert to int64"),
        ({"n": True}, "column 'n': value True (bool) does not fit the declared type int64: bool values do not convert to int64"),
        ({"x": "1.5"}, "column 'x': value '1.5' (str) does not fit the declared type double: string values do not convert to double"),
        ({"x": False}, "column 'x': value False (bool) does not fit the declared type double: bool values do not convert to double"),
        ({"s": 12}, "column 's': value 12 (int) does not fit the declared type string: int64 values do not convert to string"),
        ({"day": "2024-05-01"}, "column 'day': value '2024-05-01' (str) does not fit the declared type date32[day]: string values do not convert to date32[day]"),
        (
            {"day": datetime.datetime(2024, 5, 1, 3)},
            "column 'day': value datetime.datetime(2024, 5, 1, 3, 0) (datetime) does not fit the declared type date32[day]: timestamp[us] values do not convert to date32[day]",
        ),
        ({"flag": 1}, "column 'flag': value 1 (int) does not fit the declared type bool: int64 values do not convert to bool"),
        ({"point": {"a": "1"}}, "column 'point': value {'a': '1'} (dict) does not fit the declared type struct<a: int64>: field 'a': string values do not convert to int64"),
        ({"point": {"a": 1, "b": 2}}, "column 'point': value {'a': 1, 'b': 2} (dict) does not fit the declared type struct<a: int64>: the field 'b' is not in the struct, whose fields are 'a'"),
        ({"tags": [1, True]}, "column 'tags': value [1, True] (list) has no Arrow type"),
        ({"tags": ["1"]}, "column 'tags': value ['1'] (list) does not fit the declared type list<item: int64>: string values do not convert to int64"),
    ],
    ids=["str-int", "bool-int", "str-float", "bool-float", "int-str", "str-date", "datetime-date", "int-bool", "struct-field", "struct-extra", "mixed-list", "list-item"],
)
def test_declared_rejects_other_kind(
    tmp_path: Path, output_type: type[Output], row: dict[str, Any], reason: str
) -> None:
    path = path_for(tmp_path, output_type)

    rejected = write_batches(
        output_type(path, schema=DECLARED, invalid="dead_letter"),  # type: ignore[call-arg]
        [[{"n": 1}, row, {"n": 2}]],
    )

    assert read_columnar(path).column("n").to_pylist() == [1, 2]
    assert [r.row for r in rejected] == [row]
    assert rejected[0].reason.startswith(reason)


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_declared_accepts_exact_numbers(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    rows = [
        {"n": 2.0, "x": 3, "s": "a", "day": datetime.date(2024, 5, 1), "flag": True, "point": {"a": 1}, "tags": [1]},
        {"n": None, "x": None, "point": {}, "tags": []},
    ]

    rejected = write_batches(output_type(path, schema=DECLARED), [rows])  # type: ignore[call-arg]

    assert rejected == []
    assert read_columnar(path).to_pylist() == [
        {"n": 2, "x": 3.0, "s": "a", "day": datetime.date(2024, 5, 1), "flag": True, "point": {"a": 1}, "tags": [1]},
        {"n": None, "x": None, "s": None, "day": None, "flag": None, "point": {"a": None}, "tags": []},
    ]


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_declared_typed_round_trip(tmp_path: Path, output_type: type[Output]) -> None:
    """Every mapped type fits a declared schema of its own types: datetimes, Decimal, bytes, NaN."""
    inferred = tmp_path / f"inferred{SUFFIXES[output_type.format]}"
    write_all(output_type(inferred), TYPED)
    schema = read_columnar(inferred).schema
    path = path_for(tmp_path, output_type)

    rejected = write_batches(output_type(path, schema=schema), [TYPED])  # type: ignore[call-arg]

    assert rejected == []
    table = read_columnar(path)
    assert table.schema == schema
    first, second = table.to_pylist()
    assert first["when"] == datetime.datetime(2024, 5, 1, 12, 30, 0)
    assert first["when_utc"] == datetime.datetime(2024, 5, 1, 12, 30, 0, tzinfo=datetime.UTC)
    assert second["price"] == Decimal("11.25")
    assert second["blob"] == b"\x01\xff"
    assert math.isnan(first["ratio"])
    assert second["ratio"] == math.inf


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_declared_str_to_int_raises(tmp_path: Path, output_type: type[Output]) -> None:
    output = output_type(path_for(tmp_path, output_type), schema=DECLARED)  # type: ignore[call-arg]
    output.open(None)

    with pytest.raises(RowError, match=r"column 'n': value '12' \(str\) does not fit the declared type int64"):
        output.write([{"n": "12"}])
    output.discard()


@pytest.mark.parametrize("output_type", COLUMNAR)
def test_declared_table_of_other_kind(tmp_path: Path, output_type: type[Output]) -> None:
    path = path_for(tmp_path, output_type)
    schema = pa.schema([("n", pa.int64())])
    output = output_type(path, schema=schema, invalid="dead_letter")  # type: ignore[call-arg]
    output.open(None)
    output.write_table(pa.table({"n": ["7", "8"]}))
    output.write_table(pa.table({"n": pa.array([9], pa.int32())}))
    rejected = output.take_rejected()
    output.finish()

    assert read_columnar(path).column("n").to_pylist() == [9]
    assert [r.row for r in rejected] == [{"n": "7"}, {"n": "8"}]


def test_live_parquet_rejects_other_kind(tmp_path: Path) -> None:
    output = Parquet(tmp_path / "rows.parquet", live=True)
    output.open(None)
    output.write([{"n": 1}])
    output.commit()

    with pytest.raises(RowError, match=r"value '2' \(str\) does not fit int64, the type of the live file: string values"):
        output.write([{"n": "2"}])
    output.discard()


# CSV -------------------------------------------------------------------------


def test_csv_extend_rewrites_header(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    output = Csv(path, extra="extend")
    output.open(None)
    output.write([{"a": 1, "b": "x,y"}])
    output.write([{"a": 2, "c": "new"}, {"b": "line\r\nbreak", "a": 3}])
    output.finish()

    assert path.read_bytes() == (
        b'a,b,c\r\n1,"x,y",\r\n2,,new\r\n3,"line\r\nbreak",\r\n'
    )
    assert sorted(os.listdir(tmp_path)) == ["rows.csv"]
    assert read_duckdb(path) == [
        {"a": 1, "b": "x,y", "c": None},
        {"a": 2, "b": None, "c": "new"},
        {"a": 3, "b": "line\r\nbreak", "c": None},
    ]


def test_csv_extend_survives_resume(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    first = Csv(path, extra="extend")
    first.open(None)
    first.write([{"a": 1}, {"a": 2, "b": 3}])
    position = first.commit()
    first.write([{"a": 9, "z": 9}])
    first.close()

    second = Csv(path, extra="extend")
    second.open(position)
    second.write([{"c": 4}])
    second.finish()

    assert path.read_bytes() == b"a,b,c\r\n1,,\r\n2,3,\r\n,,4\r\n"


def test_csv_extend_after_seal_crash(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    first = Csv(path, extra="extend")
    first.open(None)
    first.write([{"a": 1}, {"b": 2}])
    position = first.commit()
    first.seal()
    first.close()

    second = Csv(path, extra="extend")
    second.open(position)
    second.finish()

    assert path.read_bytes() == b"a,b\r\n1,\r\n,2\r\n"
    assert sorted(os.listdir(tmp_path)) == ["rows.csv"]


def test_csv_non_str_key(tmp_path: Path) -> None:
    output = Csv(tmp_path / "rows.csv")
    output.open(None)

    with pytest.raises(
        RowError, match=r"key 1 is a int, but CSV column names must be str; convert the keys with str\(\)"
    ):
        output.write([{1: "a", "b": 2}])
    output.discard()


def test_csv_unknown_key_dead_letter(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    output = Csv(path, extra="dead_letter")
    output.open(None)
    output.write([{"a": 1}])
    output.write([{"a": 2, "z": 3}])
    rejected = output.take_rejected()
    output.finish()

    assert path.read_bytes() == b"a\r\n1\r\n"
    assert rejected[0].reason.startswith("row has keys ['z'] that are not CSV columns ['a']")


def test_csv_table_fast_path(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    output = Csv(path)
    output.open(None)
    output.write_table(output_jobs.arrow_block(0).slice(0, 2))
    output.write(output_jobs.block_rows(2)[:1])
    output.finish()

    # pyarrow's CSV writer quotes every string and writes 0.0 as 0.
    assert path.read_bytes() == (
        b'id,name,half,even\r\n0,"item-0",0,true\r\n1,"item-1",0.5,false\r\n2,item-2,1.0,true\r\n'
    )


# Tables encoded as JSON by pyarrow compute -------------------------------------

MIXED_TABLE = pa.table(
    {
        "i": [1, None, -3],
        "f": [0.5, 2.0, 1e20],
        "b": [True, None, False],
        "s": ['a"b\\c', "x\ny\tz\r", "ünï 🙂"],
        "n": pa.nulls(3),
        "d": pa.array([18000, None, 0], pa.date32()),
    }
)


def test_arrow_json_matches_orjson() -> None:
    expected = b"".join(orjson.dumps(row) + b"\n" for row in MIXED_TABLE.to_pylist())

    assert encode_lines(MIXED_TABLE, "null") == expected


@pytest.mark.parametrize(("nan", "texts"), [("null", [b"null"] * 3), ("string", [b'"NaN"', b'"Infinity"', b'"-Infinity"'])])
def test_arrow_json_non_finite(nan: str, texts: list[bytes]) -> None:
    table = pa.table({"x": [math.nan, math.inf, -math.inf]})

    assert encode_lines(table, nan) == b"".join(b'{"x":' + text + b"}\n" for text in texts)


@pytest.mark.parametrize(
    "column",
    [pa.array(["bell\x07"]), pa.array([[1, 2]]), pa.array([datetime.datetime(2024, 1, 1)])],
    ids=["control-character", "list", "timestamp"],
)
def test_arrow_json_falls_back(column: pa.Array) -> None:
    assert encode_lines(pa.table({"x": column}), "null") is None


def test_jsonl_table_with_control_character(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    output = JsonLines(path)
    output.open(None)
    output.write_table(pa.table({"x": ["bell\x07"]}))
    output.finish()

    assert path.read_bytes() == b'{"x":"bell\\u0007"}\n'
