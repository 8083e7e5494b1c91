"""CSV output: RFC 4180 quoting, UTF-8, a header fixed by the first rows."""

from __future__ import annotations

import base64
import csv
import io
import os
from typing import Any, BinaryIO

import orjson

from syncagg.outputs.base import Output, json_default, partial_path
from syncagg.outputs.files import publish, reopen_at

__all__ = ["Csv"]

_EXTRA_POLICIES = ("error", "ignore")


class Csv(Output):
    """Write rows as CSV with a header line.

    The columns are the keys of the first rows, in the order they first
    appear, unless ``columns`` is given. A row without a column gets an empty
    cell. Nested values (dicts, lists) are written as JSON text, ``bytes`` as
    base64 text, ``None`` as an empty cell.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name.
    columns : list of str, optional
        Column names and their order.
    extra : {"error", "ignore"}, default "error"
        What to do with a row that has a key outside the columns: raise
        (the run stops with ``OutputError``) or drop that key.
    """

    format = "csv"
    suffixes = (".csv",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: list[str] | None = None,
        extra: str = "error",
    ) -> None:
        super().__init__(path)
        if extra not in _EXTRA_POLICIES:
            raise ValueError(f"extra must be one of {_EXTRA_POLICIES}, got {extra!r}")
        self.columns = list(columns) if columns is not None else None
        self.extra = extra

    def settings(self) -> dict[str, Any]:
        return {"columns": self.columns, "extra": self.extra}

    def open(self, position: Any | None) -> None:
        self._partial = partial_path(self.path)
        self._columns = self.columns
        self._file: BinaryIO
        if position is None:
            self._file = open(self._partial, "wb")  # noqa: SIM115
            if self._columns is not None:
                # Declared columns need no rows to fix them, so the header goes first.
                self._file.write(_encode([self._columns]))
            return
        self._columns = position["columns"]
        self._file = reopen_at(self._partial, int(position["offset"]))

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            # An empty batch must not fix the columns to an empty header.
            return
        lines: list[list[Any]] = []
        if self._columns is None:
            self._columns = _first_seen_keys(rows)
            lines.append(self._columns)

        columns = self._columns
        known = set(columns)
        for row in rows:
            if self.extra == "error" and not known.issuperset(row):
                unknown = sorted(str(k) for k in row if k not in known)
                raise ValueError(
                    f"row has keys {unknown} that are not CSV columns {columns}; pass "
                    "Csv(path, columns=[...]) with every column, or extra='ignore' to drop them"
                )
            lines.append([_cell(row.get(column)) for column in columns])
        self._file.write(_encode(lines))

    def commit(self) -> dict[str, Any]:
        self._file.flush()
        os.fsync(self._file.fileno())
        return {"offset": self._file.tell(), "columns": self._columns}

    def finish(self) -> None:
        self.commit()
        self._file.close()
        publish(self._partial, self.path)

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


def _encode(lines: list[list[Any]]) -> bytes:
    """Return ``lines`` as UTF-8 CSV with RFC 4180 quoting and CRLF line ends."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows(lines)
    return text.getvalue().encode("utf-8")


def _first_seen_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        for key in row:
            keys.setdefault(str(key), None)
    return list(keys)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dict, list, tuple)):
        return orjson.dumps(value, default=json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return str(value)
