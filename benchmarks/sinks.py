"""Sinks: the peers' parent-side handling of each result, which folds, writes or waits.

These stand for the code a user writes around ``Pool.imap_unordered`` and
the like. Files are written the fast way: rows buffered into batches of
65,536, orjson for JSON Lines, pyarrow for Parquet with zstd as syncagg
uses by default.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 65_536


class Sink(Protocol):
    """The parent side of a peer run: receives each result, then is closed."""

    def add(self, value: Any) -> None: ...

    def close(self) -> None: ...


class Fold:
    """Fold each value into an accumulator: ``acc = fn(acc, value)``."""

    def __init__(self, fn: Callable[[Any, Any], Any], initial: Any) -> None:
        self.fn = fn
        self.value = initial

    def add(self, value: Any) -> None:
        self.value = self.fn(self.value, value)

    def close(self) -> None:
        return None


class Consume:
    """Call ``consumer(value)`` for each value."""

    def __init__(self, consumer: Callable[[Any], Any]) -> None:
        self.consumer = consumer

    def add(self, value: Any) -> None:
        self.consumer(value)

    def close(self) -> None:
        return None


class Batched:
    """Buffer rows and hand them to ``write`` in batches of ``BATCH_ROWS``."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, value: Any) -> None:
        self.rows.append(value)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.write(self.rows)
        self.rows = []

    def write(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.flush()


class ParquetRows(Batched):
    """Write rows to a Parquet file, one row group per batch."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.writer: pq.ParquetWriter | None = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(rows)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table)

    def close(self) -> None:
        super().close()
        if self.writer is not None:
            self.writer.close()


class JsonLinesRows(Batched):
    """Write rows as JSON Lines, one ``write`` call per batch."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.file.write(b"".join(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in rows))

    def close(self) -> None:
        super().close()
        self.file.close()


class CsvRows(Batched):
    """Write rows as CSV with a header taken from the first row's keys."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.file: TextIO = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.writer(self.file)
        self.header = False

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not self.header:
            self.writer.writerow(rows[0].keys())
            self.header = True
        self.writer.writerows(row.values() for row in rows)

    def close(self) -> None:
        super().close()
        self.file.close()


class Fanout:
    """Send each value to several sinks."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def add(self, value: Any) -> None:
        for sink in self.sinks:
            sink.add(value)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
