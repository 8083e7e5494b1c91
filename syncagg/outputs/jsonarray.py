"""JSON output: one array of objects, one object per line.

The file reads ``[``, then the rows separated by ``,`` and a line break,
then ``]`` (``[``, a line break and ``]`` when no row arrived). The closing bracket is written only by ``seal``, so a position
that ``commit`` returns is always an offset before it: a resume cuts the
file back there, and the bracket of an earlier ``seal`` goes with it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from syncagg.outputs.appendfile import AppendOutput
from syncagg.outputs.jsontext import check_nan_policy, encode_rows, encode_table

__all__ = ["Json"]

_OPENING = b"[\n"
_SEPARATOR = b",\n"
_CLOSING = b"\n]\n"


class Json(AppendOutput):
    """Write one JSON array of objects (``.json``), UTF-8.

    Values are written as by ``JsonLines``. The array is valid JSON only
    after ``seal``, because the closing bracket comes last; use
    ``JsonLines`` for a file that other programs read while it grows.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name. While the run goes on the data is in a hidden
        ``.<name>.partial`` file beside it.
    nan : {"null", "string"}, default "null"
        How NaN and infinity are written: ``null``, or the strings
        ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.
    live : bool, default False
        Write under the final name from the start. Until the run completes
        the file lacks its closing bracket; a resume cuts it back to the
        last checkpoint.
    invalid : {"error", "dead_letter"}, default "error"
        What to do with a row that cannot be encoded (see ``Output``).
    """

    format = "json"
    suffixes = (".json",)
    description = "JSON: one array of objects"

    def __init__(
        self,
        path: str | os.PathLike[str],
        nan: str = "null",
        *,
        live: bool = False,
        invalid: str = "error",
    ) -> None:
        super().__init__(path, live=live, invalid=invalid)
        self.nan = check_nan_policy(nan)
        self._rows = 0

    def settings(self) -> dict[str, Any]:
        return {"nan": self.nan}

    def open(self, position: Any | None) -> None:
        if position is None:
            self._open_file(None)
            self._append(_OPENING)
            self._rows = 0
            return
        self._open_file(int(position["offset"]))
        self._rows = int(position["rows"])

    def write(self, rows: list[dict[str, Any]]) -> None:
        encoded = encode_rows(rows, self.nan, self.reject)
        if encoded:
            self._append_rows(_SEPARATOR.join(encoded), len(encoded))

    def _append_rows(self, data: bytes, count: int) -> None:
        # The separator goes before a row, so the last row needs none after it.
        self._append(_SEPARATOR + data if self._rows else data)
        self._rows += count

    def write_table(self, table: Any) -> None:
        self.write_encoded(table, _encode_for_array(table, self.nan))

    def worker_encoder(self) -> Callable[[Any], Any] | None:
        return functools.partial(_encode_for_array, nan=self.nan)

    def write_encoded(self, table: Any, encoded: Any) -> None:
        if encoded is None:
            # Encode the rows one by one, so the writer names each row that fails.
            self.write(table.to_pylist())
        elif encoded[1]:
            self._append_rows(encoded[0], encoded[1])

    def commit(self) -> dict[str, int]:  # type: ignore[override]
        return {"offset": super().commit(), "rows": self._rows}

    def _write_ending(self) -> None:
        # An array without rows is "[", a line break and "]": valid JSON with no blank line.
        self._append(_CLOSING if self._rows else _CLOSING[1:])


def _encode_for_array(table: Any, nan: str) -> tuple[bytes, int] | None:
    """Encode a table's rows joined by the array's separator, with the row count."""
    encoded = encode_table(table, nan, _SEPARATOR)
    if encoded is None:
        return None
    return encoded[: -len(_SEPARATOR)] if encoded else b"", table.num_rows
