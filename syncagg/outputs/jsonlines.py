"""JSON Lines output: one JSON object per line, encoded with orjson."""

from __future__ import annotations

import os
from typing import Any, BinaryIO

import orjson

from syncagg.outputs.base import Output, json_default, partial_path
from syncagg.outputs.files import publish, reopen_at

__all__ = ["JsonLines"]

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


class JsonLines(Output):
    """Write one JSON object per line (``.jsonl``, ``.ndjson``).

    NaN and infinity are written as ``null``, so every line is valid JSON.
    ``Decimal`` is written as a string, ``bytes`` as base64 text.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name. While the run is going the data is in a hidden
        ``.<name>.partial`` file beside it.
    """

    format = "jsonl"
    suffixes = (".jsonl", ".ndjson")

    def open(self, position: Any | None) -> None:
        self._partial = partial_path(self.path)
        self._file: BinaryIO
        if position is None:
            self._file = open(self._partial, "wb")  # noqa: SIM115
        else:
            self._file = reopen_at(self._partial, int(position))

    def write(self, rows: list[dict[str, Any]]) -> None:
        dumps = orjson.dumps
        self._file.write(b"".join([dumps(row, default=json_default, option=_OPTIONS) for row in rows]))

    def commit(self) -> int:
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def finish(self) -> None:
        self.commit()
        self._file.close()
        publish(self._partial, self.path)

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)
