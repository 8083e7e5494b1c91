"""CSV output: RFC 4180 quoting, UTF-8, a header of the columns in a stable order."""

from __future__ import annotations

import base64
import csv
import datetime
import io
import logging
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from syncagg.outputs.appendfile import AppendOutput
from syncagg.outputs.base import json_default, partial_path
from syncagg.outputs.files import fsync_directory

__all__ = ["Csv"]

logger = logging.getLogger("syncagg.outputs")

EXTRA_POLICIES = ("error", "ignore", "extend", "dead_letter")

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class Csv(AppendOutput):
    """Write rows as CSV with a header line (``.csv``).

    The file is UTF-8 with CRLF line ends and RFC 4180 quoting. The columns
    are the keys of the first rows, in the order they first appear, unless
    ``columns`` is given. A row without a column gets an empty cell.

    Cells: ``None`` is empty, ``bool`` is ``true`` or ``false``, NaN and
    infinity are ``nan``, ``inf`` and ``-inf``, ``datetime``, ``date`` and
    ``time`` are ISO 8601 text (with the offset when there is a time zone),
    ``Decimal`` keeps its digits, ``bytes`` become base64 text, and dicts,
    lists and numpy arrays become JSON text. A key that is not a ``str`` is
    a rejected row (see ``invalid``).

    Parameters
    ----------
    path : str or os.PathLike
        Final file name.
    columns : list of str, optional
        Column names and their order; by default the keys of the first rows.
    extra : {"error", "ignore", "extend", "dead_letter"}, default "error"
        What to do with a row that has a key outside the columns: raise
        (the run stops with ``OutputError``), drop that key, add the key as
        a new last column, or send the row to the dead-letter output. With
        ``"extend"`` the rows written before a column was added have fewer
        cells until ``seal``, which writes the file again with the full
        header and an empty cell for each missing column.
    live : bool, default False
        Append to the final name from the start. A resume cuts the file back
        to the last checkpoint. With ``extra="extend"`` the header is the
        first columns until the run completes, when ``publish`` replaces
        the file with its rewrite.
    invalid : {"error", "dead_letter"}, default "error"
        What to do with a row that cannot be written (see ``Output``).
    """

    format = "csv"
    suffixes = (".csv",)
    description = "comma-separated values with a header row"

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: list[str] | None = None,
        extra: str = "error",
        *,
        live: bool = False,
        invalid: str = "error",
    ) -> None:
        super().__init__(path, live=live, invalid=invalid)
        if extra not in EXTRA_POLICIES:
            raise ValueError(f"extra must be one of {EXTRA_POLICIES}, got {extra!r}")
        if columns is not None and not all(isinstance(column, str) for column in columns):
            raise TypeError(f"columns must be a list of str, got {columns!r}")
        self.columns = list(columns) if columns is not None else None
        self.extra = extra
        self._columns: list[str] | None = None
        self._known: set[str] = set()
        self._header_width = 0
        self._body_offset = 0

    def settings(self) -> dict[str, Any]:
        return {"columns": self.columns, "extra": self.extra}

    def sends_dead_letters(self) -> bool:
        return super().sends_dead_letters() or self.extra == "dead_letter"

    @property
    def _rewritten_path(self) -> Path:
        return partial_path(self.path, ".sealed")

    def hidden_paths(self) -> list[Path]:
        return [partial_path(self.path), self._rewritten_path]

    @property
    def sealed_path(self) -> Path:
        return self._rewritten_path if self._needs_rewrite() else self.writing_path

    def open(self, position: Any | None) -> None:
        self._rewritten_path.unlink(missing_ok=True)
        if position is None:
            self._open_file(None)
            self._set_columns(list(self.columns or []))
            if self.columns is not None:
                # Declared columns need no rows to fix them, so the header goes first.
                self._start_header()
            else:
                self._columns = None
            return
        if self.live and self._rewrite_published(position):
            self._open_rewritten(list(position["columns"]))
            return
        self._open_file(int(position["offset"]))
        self._set_columns(list(position["columns"] or []))
        if position["columns"] is None:
            self._columns = None
        header = position.get("header")
        self._header_width = len(self._columns or ()) if header is None else int(header)
        self._body_offset = int(position.get("body", 0))

    def _rewrite_published(self, position: dict[str, Any]) -> bool:
        """Return whether an earlier run's ``publish`` already replaced the live file by its rewrite.

        The checkpoint then still records the file before the rewrite, in
        the ``finishing`` state, and cutting the rewrite back to its offset
        would cut a row in half. The rewrite is the only file whose header
        has more columns than the recorded header width.
        """
        columns = position["columns"]
        header = position.get("header")
        if columns is None or header is None or int(header) >= len(columns):
            return False
        try:
            with open(self.path, "rb") as file:
                first = next(csv.reader(io.TextIOWrapper(file, encoding="utf-8", newline="")), None)
        except FileNotFoundError:
            return False
        return bool(first == columns)

    def _open_rewritten(self, columns: list[str]) -> None:
        """Continue after a published rewrite, which contains every row of the checkpoint."""
        logger.info(
            "the live CSV output %s already has its full header, rewritten by an earlier run, "
            "and is kept as it is",
            self.path,
        )
        self._open_file(self.path.stat().st_size)
        self._set_columns(columns)
        self._header_width = len(columns)
        self._body_offset = len(_encode([columns]))

    def _start_header(self) -> None:
        assert self._columns is not None
        header = _encode([self._columns])
        self._append(header)
        self._header_width = len(self._columns)
        self._body_offset = len(header)

    def write(self, rows: list[dict[str, Any]]) -> None:
        lines = []
        if self._columns is None:
            rows = [row for index, row in enumerate(rows) if self._has_str_keys(index, row)]
            if not rows:
                # An empty batch must not fix the columns to an empty header.
                return
            self._set_columns(list(dict.fromkeys(key for row in rows for key in row)))
            self._start_header()
        for index, row in enumerate(rows):
            cells = self._cells(index, row)
            if cells is not None:
                lines.append(cells)
        if lines:
            self._append(_encode(lines))

    def _set_columns(self, columns: list[str]) -> None:
        self._columns = columns
        self._known = set(columns)

    def _has_str_keys(self, index: int, row: dict[str, Any]) -> bool:
        """Return whether every key is a ``str``, else reject the row."""
        for key in row:
            if not isinstance(key, str):
                self.reject(
                    index, row,
                    f"key {key!r} is a {type(key).__qualname__}, but CSV column names must be "
                    "str; convert the keys with str() in the job function",
                )
                return False
        return True

    def _cells(self, index: int, row: dict[str, Any]) -> list[Any] | None:
        """Return the row's cells in column order, or ``None`` for a rejected row."""
        fits = self._known.issuperset(row)
        if not fits and not (self._has_str_keys(index, row) and self._fit_extra_keys(index, row)):
            return None
        assert self._columns is not None
        try:
            return [_cell(row.get(column)) for column in self._columns]
        except TypeError as exc:
            self.reject(index, row, str(exc))
            return None

    def _fit_extra_keys(self, index: int, row: dict[str, Any]) -> bool:
        """Apply the ``extra`` policy to a row with unknown keys; return whether to write it."""
        assert self._columns is not None
        unknown = [key for key in row if key not in self._known]
        if self.extra == "ignore":
            return True
        if self.extra == "extend":
            self._set_columns([*self._columns, *unknown])
            return True
        reason = (
            f"row has keys {unknown} that are not CSV columns {self._columns}; pass "
            "Csv(path, columns=[...]) with every column, extra='extend' to add them, or "
            "extra='ignore' to drop them (on the command line: --csv-extra extend or ignore)"
        )
        if self.extra == "dead_letter":
            self.keep_rejected(index, row, reason)
            return False
        raise ValueError(reason)

    def write_table(self, table: Any) -> None:
        names = list(table.column_names)
        if self._columns is None and table.num_rows:
            self._set_columns(names)
            self._start_header()
        if names == self._columns and _plain_types(table.schema):
            self._append(_encode_table(table))
        else:
            self.write(table.to_pylist())

    def worker_encoder(self) -> Callable[[Any], Any] | None:
        return _encode_for_worker

    def write_encoded(self, table: Any, encoded: Any) -> None:
        names = list(table.column_names)
        if self._columns is None:
            self.write_table(table)
        elif encoded is not None and names == self._columns:
            self._append(encoded)
        else:
            self.write_table(table)

    def commit(self) -> dict[str, Any]:  # type: ignore[override]
        offset = super().commit()
        return {
            "offset": offset,
            "columns": self._columns,
            "header": self._header_width,
            "body": self._body_offset,
        }

    def _needs_rewrite(self) -> bool:
        return self._columns is not None and len(self._columns) > self._header_width

    def seal(self) -> None:
        super().seal()
        if self._columns is None:
            logger.warning(
                "the CSV output %s received no rows and has no declared columns, so the file is "
                "empty (0 bytes). pandas, pyarrow and polars reject an empty CSV file, so pass "
                "Csv(path, columns=[...]) to write a header without rows",
                self.path,
            )
        if self._needs_rewrite():
            self._rewrite()

    def _rewrite(self) -> None:
        """Write the file again with the full header, padding the rows written before it grew."""
        assert self._columns is not None
        width = len(self._columns)
        target = self._rewritten_path
        with open(self.writing_path, "rb") as source, open(target, "wb") as sink:
            sink.write(_encode([self._columns]))
            source.seek(self._body_offset)
            reader = csv.reader(io.TextIOWrapper(source, encoding="utf-8", newline=""))
            batch: list[list[str]] = []
            for row in reader:
                batch.append(row + [""] * (width - len(row)))
                if len(batch) == 10_000:
                    sink.write(_encode(batch))
                    batch = []
            sink.write(_encode(batch))
            sink.flush()
            os.fsync(sink.fileno())
        fsync_directory(target.parent)

    def publish(self) -> None:
        if self._needs_rewrite() and self.live:
            # The final name has the short header, so the rewrite replaces it.
            os.replace(self._rewritten_path, self.path)
            fsync_directory(self.path.parent)
            return
        super().publish()
        if self._needs_rewrite():
            partial_path(self.path).unlink(missing_ok=True)


def _encode(lines: list[list[Any]]) -> bytes:
    """Return ``lines`` as UTF-8 CSV with RFC 4180 quoting and CRLF line ends."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows(lines)
    return text.getvalue().encode("utf-8")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, Decimal)):
        return value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return _cell(value.item())
    if isinstance(value, (dict, list, tuple)) or type(value).__module__ == "numpy":
        try:
            return orjson.dumps(value, default=json_default, option=_JSON_OPTIONS).decode()
        except orjson.JSONEncodeError as exc:
            raise TypeError(str(exc.__cause__ or exc)) from None
    raise TypeError(
        f"cannot write a value of type {type(value).__qualname__} to CSV; return str, "
        "numbers, bool, None, datetime, date, Decimal, bytes, dicts or lists, or convert "
        "it with str(value) in the job function"
    )


def _plain_types(schema: Any) -> bool:
    """Return whether pyarrow's CSV writer writes every column as ``_cell`` would."""
    import pyarrow as pa

    def plain(kind: Any) -> bool:
        return bool(
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_date32(kind)
            or pa.types.is_null(kind)
        )

    return all(plain(field.type) for field in schema)


def _encode_table(table: Any) -> bytes:
    """Encode a table's rows with pyarrow's CSV writer, without a header."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    sink = pa.BufferOutputStream()
    # Larger batches than pyarrow's default of 1024 rows cut the per-batch overhead.
    options = pa_csv.WriteOptions(
        include_header=False, quoting_style="needed", eol="\r\n", batch_size=65536
    )
    pa_csv.write_csv(table, sink, options)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


def _encode_for_worker(table: Any) -> bytes | None:
    """Encode a table in a worker, or return ``None`` if it has a type that needs ``_cell``."""
    return _encode_table(table) if _plain_types(table.schema) else None
