"""Columnar outputs written as part files, committed at checkpoints and merged at the end.

A Parquet or Arrow IPC file cannot be read until its footer is written at
close, so an open file cannot be part of a checkpoint. These outputs write
row groups into numbered part files in a hidden ``.<name>.parts`` folder
beside the final path, close the current part at each commit, and record
how many parts are complete. ``seal`` combines the parts into one file
with one schema under the hidden name ``.<name>.partial`` (a hard link
when there is one part that already has that schema), and ``publish``
renames it to the final name, then removes the parts. A crash therefore
never leaves a file without a footer under the final name, unless the
output is ``live``.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from syncagg.errors import CheckpointError
from syncagg.outputs.arrowconvert import TableConverter, conform, unify
from syncagg.outputs.base import Output, partial_path
from syncagg.outputs.files import fsync_directory, fsync_file

__all__ = ["PartFileOutput"]


class PartFileOutput(Output):
    """The shared machinery of the Parquet and Arrow IPC outputs.

    A subclass sets ``part_suffix`` and implements ``_new_writer``,
    ``_read_schema`` and ``_read_batches``.
    """

    part_suffix = ".part"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: pa.Schema | None,
        group_rows: int,
        group_bytes: int,
        live: bool,
        invalid: str,
    ) -> None:
        super().__init__(path, live=live, invalid=invalid)
        if schema is not None and not isinstance(schema, pa.Schema):
            raise TypeError(f"schema must be a pyarrow.Schema, got {schema!r}")
        self.schema = schema
        self._group_rows = _positive("row count per group", group_rows)
        self._group_bytes = _positive("bytes per group", group_bytes)
        self._writer: Any = None
        self._writer_schema: pa.Schema | None = None

    # Subclass hooks ------------------------------------------------------

    @abc.abstractmethod
    def _new_writer(self, path: Path, schema: pa.Schema) -> Any:
        """Return a writer with ``write_group(table)`` semantics through ``_write_to``."""

    @abc.abstractmethod
    def _write_to(self, writer: Any, table: pa.Table) -> None:
        """Write ``table`` as one row group (or record batch) with ``writer``."""

    @abc.abstractmethod
    def _read_schema(self, path: Path) -> pa.Schema:
        """Return the Arrow schema of a closed part file."""

    @abc.abstractmethod
    def _read_batches(self, path: Path) -> Iterator[pa.RecordBatch]:
        """Yield the record batches of a closed part file."""

    # Paths ---------------------------------------------------------------

    @property
    def _parts(self) -> Path:
        return partial_path(self.path, ".parts")

    def hidden_paths(self) -> list[Path]:
        return [self._parts, partial_path(self.path)]

    def _part_path(self, index: int) -> Path:
        return self._parts / f"part-{index:06d}{self.part_suffix}"

    def _is_part(self, path: Path) -> bool:
        return path.name.startswith("part-") and path.name.endswith(self.part_suffix)

    def _part_index(self, path: Path) -> int:
        return int(path.name[len("part-") : -len(self.part_suffix)])

    # Lifecycle -----------------------------------------------------------

    def open(self, position: Any | None) -> None:
        self._converter = TableConverter(self.schema, self.reject, fixed=self.live)
        self._buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._rows = 0
        self._committed = 0
        partial_path(self.path).unlink(missing_ok=True)
        if self.live:
            self._open_live(position)
            return
        if position is None:
            shutil.rmtree(self._parts, ignore_errors=True)
            self._parts.mkdir()
            return
        self._resume(int(position["parts"]), int(position["rows"]))

    def _open_live(self, position: Any | None) -> None:
        if position is not None and int(position.get("rows", 0)):
            raise CheckpointError(
                f"cannot resume the live {self.format} output {str(self.path)!r}: a file "
                "written under its final name has no footer until the run completes, so the "
                "rows of the crashed run are lost; delete the file and the checkpoint to "
                "start afresh, and leave live=False for a run that must resume"
            )

    def _resume(self, parts: int, rows: int) -> None:
        if not self._parts.is_dir():
            raise CheckpointError(
                f"cannot resume: the part folder {str(self._parts)!r} that the "
                "checkpoint refers to is missing; delete the checkpoint file to start afresh"
            )
        for path in self._parts.iterdir():
            if not self._is_part(path) or self._part_index(path) >= parts:
                path.unlink()
        self._committed = parts
        self._rows = rows
        if parts and self.schema is None:
            schemas = [self._read_schema(self._part_path(i)) for i in range(parts)]
            self._converter.schema = unify(schemas)

    def write(self, rows: list[dict[str, Any]]) -> None:
        table = self._converter.from_rows(rows)
        if table is not None:
            self._add(table)

    def write_table(self, table: Any) -> None:
        converted = self._converter.from_table(table)
        if converted is not None:
            self._add(converted)

    def _add(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._buffered_rows += table.num_rows
        self._buffered_bytes += table.nbytes
        while self._buffered_rows >= self._group_rows or self._buffered_bytes >= self._group_bytes:
            written = self._rows
            self._write_groups(whole_only=True)
            if self._rows == written:
                # The estimate before the cast was larger than the table; no group is full.
                break

    def _write_groups(self, whole_only: bool) -> None:
        """Write the buffer as row groups; with ``whole_only`` keep a short rest buffered."""
        if not self._buffer:
            return
        schema = self._converter.schema
        assert schema is not None
        table = pa.concat_tables([conform(part, schema) for part in self._buffer])
        size = _group_size(table, self._group_rows, self._group_bytes)
        start = 0
        while table.num_rows - start >= size or (not whole_only and start < table.num_rows):
            group = table.slice(start, size)
            self._write_group(group)
            start += group.num_rows
        rest = table.slice(start)
        self._buffer = [rest] if rest.num_rows else []
        self._buffered_rows = rest.num_rows
        self._buffered_bytes = rest.nbytes if rest.num_rows else 0

    def _write_group(self, table: pa.Table) -> None:
        if self._writer is not None and not self._writer_schema.equals(table.schema):  # type: ignore[union-attr]
            self._close_part()
        if self._writer is None:
            target = self.path if self.live else self._part_path(self._committed)
            self._writer = self._new_writer(target, table.schema)
            self._writer_schema = table.schema
        self._write_to(self._writer, table)
        self._rows += table.num_rows

    def commit(self) -> dict[str, int]:
        self._write_groups(whole_only=False)
        if self.live:
            # A live file cannot be closed and reopened; its rows are durable only at the end.
            return {"rows": self._rows, "live": 1}
        self._close_part()
        fsync_directory(self._parts)
        return {"parts": self._committed, "rows": self._rows}

    def _close_part(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.close()
        if self.live:
            return
        fsync_file(self._part_path(self._committed))
        self._committed += 1

    def seal(self) -> None:
        self.check_target()
        self.commit()
        if self.live:
            self._seal_live()
            return
        parts = [self._part_path(i) for i in range(self._committed)]
        schemas = [self._read_schema(part) for part in parts]
        final = unify(schemas) if schemas else self._empty_schema()
        sealed = partial_path(self.path)
        sealed.unlink(missing_ok=True)
        if len(parts) == 1 and schemas[0].equals(final):
            # The parts stay until publish, so a crash before it can seal again.
            _link_or_copy(parts[0], sealed)
        else:
            try:
                self._merge(parts, final, sealed)
            except BaseException:
                sealed.unlink(missing_ok=True)
                raise
            fsync_file(sealed)
        fsync_directory(sealed.parent)

    def _seal_live(self) -> None:
        if self._writer is None and self._rows == 0:
            # No row arrived: an empty file still carries the schema.
            self._writer = self._new_writer(self.path, self._empty_schema())
        self._close_part()
        fsync_file(self.path)

    def _empty_schema(self) -> pa.Schema:
        # NOTE: without rows or a declared schema the file has no columns;
        # pyarrow and polars read it, but DuckDB 2.0 rejects a Parquet file
        # without columns.
        return self._converter.schema or pa.schema([])

    def _merge(self, parts: list[Path], schema: pa.Schema, target: Path) -> None:
        # Every commit ends a part with a short group. The merge regroups the
        # rows, so that only the last group of the file is short.
        pending: list[pa.Table] = []
        pending_rows = pending_bytes = 0
        writer = self._new_writer(target, schema)
        try:
            for part in parts:
                for batch in self._read_batches(part):
                    table = conform(pa.Table.from_batches([batch]), schema)
                    pending.append(table)
                    pending_rows += table.num_rows
                    pending_bytes += table.nbytes
                    if pending_rows >= self._group_rows or pending_bytes >= self._group_bytes:
                        pending = self._write_whole_groups(writer, pending)
                        pending_rows = sum(t.num_rows for t in pending)
                        pending_bytes = sum(t.nbytes for t in pending)
            if pending_rows:
                self._write_to(writer, pa.concat_tables(pending))
        finally:
            writer.close()

    def _write_whole_groups(self, writer: Any, pending: list[pa.Table]) -> list[pa.Table]:
        table = pa.concat_tables(pending)
        size = _group_size(table, self._group_rows, self._group_bytes)
        start = 0
        while table.num_rows - start >= size:
            self._write_to(writer, table.slice(start, size))
            start += size
        rest = table.slice(start)
        return [rest] if rest.num_rows else []

    def publish(self) -> None:
        super().publish()
        if not self.live:
            shutil.rmtree(self._parts, ignore_errors=True)

    def close(self) -> None:
        # The open part is not in any checkpoint, so a resume deletes it.
        if self._writer is not None:
            writer, self._writer = self._writer, None
            # A write that failed was already reported, and the part is in
            # no checkpoint, so a resume deletes it.
            with contextlib.suppress(OSError, pa.ArrowException):
                writer.close()

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self._parts, ignore_errors=True)
        partial_path(self.path).unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        # Some file systems have no hard links.
        shutil.copyfile(source, target)
        fsync_file(target)


def _group_size(table: pa.Table, rows: int, max_bytes: int) -> int:
    """Return rows per group: at most ``rows``, and about ``max_bytes`` of Arrow memory."""
    if table.num_rows == 0 or table.nbytes <= max_bytes:
        return rows
    per_row = table.nbytes / table.num_rows
    return max(1, min(rows, int(max_bytes // per_row)))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"the {name} must be a positive int, got {value!r}")
    return value
