"""Numbered Arrow IPC part files that keep a columnar output's rows for a resume.

In a run with a checkpoint, the Parquet and Arrow IPC outputs write every
row twice. One copy goes into the final file, which has no footer until the
run ends, and one into the part files of this log, in a hidden folder
beside the final path. A commit closes and fsyncs the open part, so the committed
parts are the durable state that a checkpoint refers to, by their count.
The parts are plain Arrow IPC files, so writing them costs no encoding,
unlike a Parquet part.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from syncagg.errors import CheckpointError
from syncagg.outputs.files import fsync_directory, fsync_file

__all__ = ["PART_CODECS", "PartLog", "close_quietly"]

PART_CODECS = (None, "lz4", "zstd")

_PREFIX = "part-"
# Bytes that a part's stream collects before a write to the file. An IPC
# record batch takes a few writes per column, so unbuffered they cost many
# small system calls.
_BUFFER_BYTES = 1024 * 1024
_SUFFIX = ".arrow"
# Parquet parts come from runs of an earlier layout and from ``adopt``.
_SUFFIXES = (_SUFFIX, ".parquet")


class PartLog:
    """The part files of one output in ``folder``.

    Parameters
    ----------
    folder : Path
        The hidden folder that contains the parts.
    compression : {None, "lz4", "zstd"}
        Buffer compression of the parts.
    """

    def __init__(self, folder: Path, compression: str | None) -> None:
        if compression not in PART_CODECS:
            raise ValueError(f"part_compression must be one of {PART_CODECS}, got {compression!r}")
        self.folder = folder
        # The folder takes this name before its files are removed, so that
        # the folder under its own name always contains every committed part.
        self.removing = folder.with_name(f"{folder.name}.removing")
        self.committed = 0
        self._options = pa.ipc.IpcWriteOptions(compression=compression)
        self._writer: Any = None
        self._stream: pa.NativeFile | None = None
        self._schema: pa.Schema | None = None

    def start(self) -> None:
        """Remove the parts of any earlier run and create an empty folder."""
        self.remove()
        self.folder.mkdir()
        self.committed = 0

    def resume(self, parts: int) -> None:
        """Keep the first ``parts`` parts and delete every other file in the folder.

        Raises ``CheckpointError`` if the folder or one of those parts is missing.
        """
        if not self.folder.is_dir():
            raise CheckpointError(
                f"cannot resume: the part folder {str(self.folder)!r} that the "
                "checkpoint refers to is missing; delete the checkpoint file to start afresh"
            )
        for path in self.folder.iterdir():
            index = _part_index(path)
            if index is None or index >= parts:
                path.unlink()
        missing = [index for index in range(parts) if self._find(index) is None]
        if missing:
            raise CheckpointError(
                f"cannot resume: {len(missing)} of the {parts} part files that the checkpoint "
                f"refers to are missing from {str(self.folder)!r}, the first is number "
                f"{missing[0]}; delete the checkpoint file to start afresh"
            )
        self.committed = parts

    def write(self, table: pa.Table) -> None:
        """Append ``table`` to the open part; a table of another schema starts a new part."""
        if self._writer is not None and not self._schema.equals(table.schema):  # type: ignore[union-attr]
            self._close_part()
        if self._writer is None:
            path = self.folder / f"{_PREFIX}{self.committed:06d}{_SUFFIX}"
            self._stream = pa.BufferedOutputStream(pa.OSFile(str(path), "wb"), _BUFFER_BYTES)
            self._writer = pa.ipc.new_file(self._stream, table.schema, options=self._options)
            self._schema = table.schema
        self._writer.write_table(table)

    def adopt(self, path: Path, suffix: str) -> None:
        """Move the closed Parquet or Arrow IPC file ``path`` into the folder as the next part."""
        if suffix not in _SUFFIXES:
            raise ValueError(f"a part file's suffix must be one of {_SUFFIXES}, got {suffix!r}")
        self._close_part()
        os.replace(path, self.folder / f"{_PREFIX}{self.committed:06d}{suffix}")
        self.committed += 1

    def commit(self) -> int:
        """Close and fsync the open part, and return the number of complete parts."""
        self._close_part()
        fsync_directory(self.folder)
        return self.committed

    def _close_part(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        stream, self._stream = self._stream, None
        writer.close()
        stream.close()  # type: ignore[union-attr]
        fsync_file(self._part(self.committed))
        self.committed += 1

    def schemas(self) -> list[pa.Schema]:
        """Return the schema of each complete part."""
        return [_read_schema(self._part(index)) for index in range(self.committed)]

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield the record batches of the complete parts in order."""
        for index in range(self.committed):
            yield from _read_batches(self._part(index))

    def close(self) -> None:
        """Close the open part without raising; it is in no checkpoint, so a resume deletes it."""
        writer, self._writer = self._writer, None
        stream, self._stream = self._stream, None
        close_quietly(writer)
        close_quietly(stream)

    def remove(self) -> None:
        """Close the open part and remove the folder, first renaming it to ``removing``."""
        self.close()
        shutil.rmtree(self.removing, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.folder, self.removing)
        shutil.rmtree(self.removing, ignore_errors=True)

    def _part(self, index: int) -> Path:
        found = self._find(index)
        if found is None:
            raise CheckpointError(
                f"the part file number {index} is missing from {str(self.folder)!r}; "
                "delete the checkpoint file to start afresh"
            )
        return found

    def _find(self, index: int) -> Path | None:
        for suffix in _SUFFIXES:
            path = self.folder / f"{_PREFIX}{index:06d}{suffix}"
            if path.exists():
                return path
        return None


def close_quietly(writer: Any) -> None:
    """Close a Parquet or Arrow IPC writer, or a stream, whose file no checkpoint refers to.

    An error is not raised, because the write that failed was already reported.
    """
    if writer is not None:
        with contextlib.suppress(OSError, pa.ArrowException):
            writer.close()


def _part_index(path: Path) -> int | None:
    """Return the number in a part file's name, or ``None`` for another file."""
    name = path.name
    suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
    if not name.startswith(_PREFIX) or suffix is None:
        return None
    digits = name[len(_PREFIX) : -len(suffix)]
    return int(digits) if digits.isdigit() else None


def _read_schema(path: Path) -> pa.Schema:
    if path.suffix == ".parquet":
        return pq.read_schema(path)
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_file(source).schema


def _read_batches(path: Path) -> Iterator[pa.RecordBatch]:
    if path.suffix == ".parquet":
        with pq.ParquetFile(path) as source:
            yield from source.iter_batches()
        return
    # Read into memory, not mapped: the batches outlive the open file.
    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)
