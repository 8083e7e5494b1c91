"""JSON Lines output: one JSON object per line, encoded with orjson."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from syncagg.outputs.appendfile import AppendOutput
from syncagg.outputs.jsontext import check_nan_policy, encode_rows, encode_table

__all__ = ["JsonLines"]


class JsonLines(AppendOutput):
    """Write one JSON object per line (``.jsonl``, ``.ndjson``), UTF-8, ``\\n`` line ends.

    Nested dicts and lists stay nested. ``datetime`` becomes RFC 3339 text
    (with the offset when it has a time zone), ``date`` ``YYYY-MM-DD``,
    ``Decimal`` a string with its exact digits, ``bytes`` base64 text and
    numpy values their Python equivalents. A value of another type is a
    rejected row (see ``invalid``).

    Parameters
    ----------
    path : str or os.PathLike
        Final file name. While the run goes on the data is in a hidden
        ``.<name>.partial`` file beside it.
    nan : {"null", "string"}, default "null"
        How NaN and infinity are written: ``null``, or the strings
        ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``. Either way each line
        is valid JSON.
    live : bool, default False
        Append to the final name from the start. After a crash the file
        holds the rows up to the crash, and a resume cuts it back to the
        last checkpoint.
    invalid : {"error", "dead_letter"}, default "error"
        What to do with a row that cannot be encoded (see ``Output``).
    """

    format = "jsonl"
    suffixes = (".jsonl", ".ndjson")
    description = "JSON Lines: one JSON object per line"

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

    def settings(self) -> dict[str, Any]:
        # Added only when set, so checkpoints of earlier runs still match.
        return {} if self.nan == "null" else {"nan": self.nan}

    def open(self, position: Any | None) -> None:
        self._open_file(None if position is None else int(position))

    def write(self, rows: list[dict[str, Any]]) -> None:
        encoded = encode_rows(rows, self.nan, self.reject)
        if encoded:
            self._append(b"\n".join(encoded) + b"\n")

    def write_table(self, table: Any) -> None:
        self.write_encoded(table, encode_table(table, self.nan, b"\n"))

    def worker_encoder(self) -> Callable[[Any], Any] | None:
        return functools.partial(encode_table, nan=self.nan, separator=b"\n")

    def write_encoded(self, table: Any, encoded: Any) -> None:
        if encoded is None:
            # Encode the rows one by one, so the writer names each row that fails.
            self.write(table.to_pylist())
        else:
            self._append(encoded)
