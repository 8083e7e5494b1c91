"""Inputs of ``syncagg run``: the rows of JSON Lines, CSV, Parquet or text files.

Each file yields one input per row, read lazily, and the files follow each
other in the order given. A job is known by its position in the inputs, so a
resumed run must read the same files in the same order.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from syncagg.cli_errors import UsageError
from syncagg.cli_stdin import stdin_lines
from syncagg.dispatcher import PAUSE, Pause
from syncagg.runner import stop_requested

__all__ = ["INPUT_FORMATS", "InputFiles", "open_inputs"]

# Format name -> (suffixes, what one input is).
INPUT_FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "jsonl": (
        (".jsonl", ".ndjson"),
        "one JSON value per line; blank lines are skipped",
    ),
    "csv": ((".csv",), "one dict per row, keyed by the header row; values are strings"),
    "parquet": ((".parquet", ".pq"), "one dict per row"),
    "text": ((".txt",), "one string per line, without its line ending"),
}

_PARQUET_BATCH_ROWS = 1024
_STDIN = "-"


def format_for(path: str, requested: str | None) -> str:
    """Return the input format of ``path``: ``requested``, or the one its suffix names.

    Raises ``UsageError`` for an unknown format or suffix.
    """
    names = ", ".join(INPUT_FORMATS)
    if requested is not None:
        if requested not in INPUT_FORMATS:
            raise UsageError(f"unknown input format {requested!r}; use one of {names}")
        return requested

    suffix = Path(path).suffix.lower()
    for name, (suffixes, _) in INPUT_FORMATS.items():
        if suffix in suffixes:
            return name
    known = " ".join(s for suffixes, _ in INPUT_FORMATS.values() for s in suffixes)
    raise UsageError(
        f"cannot tell the format of input {path!r} from its suffix {suffix!r}; name the file "
        f"with one of {known}, or pass --input-format with one of {names}"
    )


def open_inputs(paths: list[str], requested: str | None) -> Iterable[Any]:
    """Check every input file and return an iterable over all their rows.

    The result has a length (the inputs are counted up front, which shows a
    total and an ETA) unless one of the paths is ``-`` (standard input).

    Raises
    ------
    UsageError
        If a file is missing, unreadable, or of an unknown format.
    """
    files = [
        (path, format_for(path, requested if path != _STDIN else requested or "text"))
        for path in paths
    ]
    for path, name in files:
        _check_readable(path, name)
    if any(path == _STDIN for path in paths):
        return WithStdin(files)
    return InputFiles(files)


class WithStdin:
    """The rows of input files among which is standard input, read lazily in order.

    While standard input is quiet, text and JSON Lines input yield ``PAUSE``,
    so the rows read so far run without waiting for a full chunk.
    """

    may_pause = True

    def __init__(self, files: list[tuple[str, str]]) -> None:
        self.files = files

    def __iter__(self) -> Iterator[Any]:
        return _rows(self.files)


class InputFiles:
    """The rows of several input files, read lazily in order; ``len`` counts them once."""

    def __init__(self, files: list[tuple[str, str]]) -> None:
        self.files = files
        self._length: int | None = None

    def __iter__(self) -> Iterator[Any]:
        return _rows(self.files)

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(_count(path, name) for path, name in self.files)
        return self._length

    def __repr__(self) -> str:
        return f"InputFiles({[path for path, _ in self.files]!r})"


def _check_readable(path: str, name: str) -> None:
    if path == _STDIN:
        if name == "parquet":
            raise UsageError(
                "cannot read Parquet from standard input; pass the path of the Parquet file"
            )
        return

    if not os.path.exists(path):
        raise UsageError(f"input file {path!r} not found; check the path")
    if not os.path.isfile(path):
        raise UsageError(
            f"input {path!r} is not a file; pass the files to read, one argument each"
        )
    try:
        with open(path, "rb") as file:
            file.read(1)
        if name == "parquet":
            pq.ParquetFile(path).close()
    except OSError as exc:
        raise UsageError(
            f"cannot read input file {path!r} ({exc.strerror}); check its permissions"
        ) from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise UsageError(
            f"input file {path!r} is not a readable Parquet file ({exc}); check the file"
        ) from None


def _rows(files: list[tuple[str, str]]) -> Iterator[Any]:
    for path, name in files:
        yield from _READERS[name](path)


def _text_lines(path: str) -> Iterator[str | Pause]:
    # Lines end at "\n" only, so the count in _count_text agrees; a "\r"
    # before it is dropped too, for files written on Windows.
    if path == _STDIN:
        yield from _decoded(_stdin())
        return
    with _open_text(path) as file:
        for line in file:
            yield _without_ending(line)


def _decoded(lines: Iterator[bytes | Pause]) -> Iterator[str | Pause]:
    """Decode standard input's lines as UTF-8, dropping a byte order mark before the first."""
    number = 0
    for line in lines:
        if line is PAUSE:
            yield line
            continue
        assert isinstance(line, bytes)
        number += 1
        if number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]
        try:
            yield _without_ending(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"standard input is not valid UTF-8 near line {number}: {exc}") from None


def _without_ending(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    return line


def _json_lines(path: str) -> Iterator[Any]:
    if path == _STDIN:
        yield from _parsed_json(_stdin(), path)
        return
    with open(path, "rb") as file:
        yield from _parsed_json(file, path)


def _parsed_json(lines: Iterable[bytes | Pause], path: str) -> Iterator[Any]:
    number = 0
    for line in lines:
        if line is PAUSE:
            yield line
            continue
        assert isinstance(line, bytes)
        number += 1
        if line.isspace():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(
                f"{_name(path)} line {number} is not valid JSON: {exc}"
            ) from None


_CSV_FIELD_LIMIT = 2**31 - 1


def _csv_rows(path: str) -> Iterator[dict[str, Any]]:
    # The csv module's default limit of 131,072 characters a field rejects
    # valid files; the command line reads what the file holds.
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    with _open_text(path, newline="") as file:
        # A quoted field may span lines, so standard input's quiet spells
        # cannot end a chunk here; the reads still end on a stop request.
        reader = csv.DictReader(file)
        try:
            yield from reader
        except UnicodeDecodeError as exc:
            # The decoder reads ahead in blocks, so no line number is reliable here.
            raise ValueError(f"{_name(path)} is not valid UTF-8: {exc}") from None
        except csv.Error as exc:
            raise ValueError(f"{_name(path)} line {reader.line_num} is not valid CSV: {exc}") from None


def _parquet_rows(path: str) -> Iterator[dict[str, Any]]:
    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            yield from batch.to_pylist()


_READERS = {
    "jsonl": _json_lines,
    "csv": _csv_rows,
    "parquet": _parquet_rows,
    "text": _text_lines,
}


def _count(path: str, name: str) -> int:
    if name == "parquet":
        with pq.ParquetFile(path) as parquet:
            return int(parquet.metadata.num_rows)
    if name == "csv":
        try:
            return sum(1 for _ in _csv_rows(path))
        except ValueError:
            # The run reports the bad row with its line; the total is an estimate.
            return max(_count_text(path) - 1, 0)
    if name == "jsonl":
        with open(path, "rb") as file:
            return sum(1 for line in file if not line.isspace())
    return _count_text(path)


def _count_text(path: str) -> int:
    lines = 0
    last = b"\n"
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    # A last line without a line ending is still a line.
    return lines + (last != b"\n")


def _open_text(path: str, newline: str = "\n") -> Any:
    if path == _STDIN:
        return io.TextIOWrapper(io.BufferedReader(_StdinFile()), encoding="utf-8-sig", newline=newline)
    return open(path, encoding="utf-8-sig", newline=newline)


def _stdin() -> Iterator[bytes | Pause]:
    return stdin_lines(sys.stdin.fileno(), stop_requested)


class _StdinFile(io.RawIOBase):
    """Standard input's lines as a raw binary file, skipping ``PAUSE``, for the csv reader."""

    def __init__(self) -> None:
        super().__init__()
        self._lines = (line for line in _stdin() if isinstance(line, bytes))
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._rest:
            self._rest = next(self._lines, b"")
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def _name(path: str) -> str:
    return "standard input" if path == _STDIN else repr(path)
