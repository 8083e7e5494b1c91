"""Columnar outputs: one file written through the run, and part files for a resume.

A Parquet or Arrow IPC file cannot be read until its footer is written at
close, so an open file cannot be part of a checkpoint. These outputs keep
one writer open on the hidden file ``.<name>.partial`` for the whole run.
With a checkpoint they also write every row into the Arrow IPC part files
of a ``PartLog`` in the hidden folder ``.<name>.parts``. A commit closes
and fsyncs the open part and records how many parts are complete, without
touching the file. ``seal`` closes the file, so each row is encoded once,
and ``publish`` renames it to the final name and then removes the parts.

A resume deletes the half-written file and writes it again from the
committed parts, the only case where rows are encoded twice. When an
inferred schema widens after the file's writer has started (a column
appears, integers become floats), the writer is dropped and ``seal``
merges the parts into the file instead. A crash never leaves a file
without a footer under the final name, unless the output is ``live``.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from syncagg.errors import CheckpointError
from syncagg.outputs.arrowconvert import TableConverter, conform, unify
from syncagg.outputs.base import Output, partial_path
from syncagg.outputs.files import fsync_directory, fsync_file
from syncagg.outputs.partlog import PartLog, close_quietly

__all__ = ["EMPTY_SCHEMA", "PartFileOutput"]

logger = logging.getLogger("syncagg.outputs")

# The schema of a file from a run without rows and without a declared
# schema. DuckDB 2.0 rejects a Parquet file or an Arrow table without
# columns, so the file gets one column of type null.
EMPTY_SCHEMA = pa.schema([pa.field("value", pa.null())])


class PartFileOutput(Output):
    """The shared machinery of the Parquet and Arrow IPC outputs.

    A subclass sets ``part_suffix``, the suffix of its own files among the
    parts (see ``PartLog.adopt``), and implements ``_new_writer`` and
    ``_write_to`` for its format.
    """

    part_suffix = ".arrow"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: pa.Schema | None,
        group_rows: int,
        group_bytes: int,
        live: bool,
        invalid: str,
        part_compression: str | None,
    ) -> None:
        super().__init__(path, live=live, invalid=invalid)
        if schema is not None and not isinstance(schema, pa.Schema):
            raise TypeError(f"schema must be a pyarrow.Schema, got {schema!r}")
        self.schema = schema
        self._group_rows = _positive("row count per group", group_rows)
        self._group_bytes = _positive("bytes per group", group_bytes)
        self._log = PartLog(partial_path(self.path, ".parts"), part_compression)
        self.part_compression = part_compression
        self._writer: Any = None
        self._writer_schema: pa.Schema | None = None

    # Subclass hooks ------------------------------------------------------

    @abc.abstractmethod
    def _new_writer(self, path: Path, schema: pa.Schema) -> Any:
        """Open a writer of this format on ``path``, for ``_write_to``."""

    @abc.abstractmethod
    def _write_to(self, writer: Any, table: pa.Table) -> None:
        """Write ``table`` as one row group (or record batch) with ``writer``."""

    # Paths ---------------------------------------------------------------

    @property
    def _file(self) -> Path:
        """Return the file that the writer fills: the final path when ``live``."""
        return self.sealed_path

    def hidden_paths(self) -> list[Path]:
        return [self._log.folder, self._log.removing, partial_path(self.path)]

    def is_published(self) -> bool:
        """Return whether an earlier run already renamed the complete file to its final name.

        The part folder loses its name only after that rename (see
        ``PartLog.remove``), so a final file with neither the part folder
        nor the hidden file beside it was published. The check also removes
        what a publish killed during that removal left behind.
        """
        if self.live or not self.path.exists():
            return False
        if self._log.folder.exists() or partial_path(self.path).exists():
            return False
        self._log.remove()
        return True

    # Lifecycle -----------------------------------------------------------

    def open(self, position: Any | None) -> None:
        self._converter = TableConverter(self.schema, self.reject, fixed=self.live)
        self._buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._rows = 0
        self._writer = None
        self._writer_schema = None
        self._merge_at_seal = False
        # A run without a checkpoint never resumes, so it needs no part files.
        self._logging = self.checkpointed and not self.live
        partial_path(self.path).unlink(missing_ok=True)
        if self.live:
            self._open_live(position)
        elif position is None:
            self._log.start()
        else:
            self._resume(position)

    def _open_live(self, position: Any | None) -> None:
        if position is not None and int(position.get("rows", 0)):
            raise CheckpointError(
                f"cannot resume the live {self.format} output {str(self.path)!r}: a file "
                "written under its final name has no footer until the run completes, so the "
                "rows of the crashed run are lost; delete the file and the checkpoint to "
                "start afresh, and leave live=False for a run that must resume"
            )

    def _resume(self, position: dict[str, Any]) -> None:
        """Keep the committed parts and write their rows into a new file."""
        if "parts" not in position:
            raise CheckpointError(
                f"cannot resume {str(self.path)!r} from {position!r}: the position comes from a "
                "run without a checkpoint, which writes no part files"
            )
        parts, rows = int(position["parts"]), int(position["rows"])
        self._log.resume(parts)
        if parts and self.schema is None:
            self._converter.schema = unify(self._log.schemas())
        # Checkpoints written before the converter had a state lack the key.
        self._converter.restore(position.get("converter"))
        logger.info("resuming %s: writing the %d rows of %d parts into a new file", self.path, rows, parts)

        found = 0
        for batch in self._log.batches():
            found += batch.num_rows
            self._enqueue(conform(pa.Table.from_batches([batch]), self._converter.schema))
        if found != rows:
            raise CheckpointError(
                f"cannot resume {str(self.path)!r}: its {parts} part files hold {found} rows "
                f"but the checkpoint recorded {rows}; delete the checkpoint file to start afresh"
            )
        self._rows = rows

    def write(self, rows: list[dict[str, Any]]) -> None:
        table = self._converter.from_rows(rows)
        if table is not None:
            self._add(table)

    def write_table(self, table: Any) -> None:
        converted = self._converter.from_table(table)
        if converted is not None:
            self._add(converted)

    def _add(self, table: pa.Table) -> None:
        if self._logging:
            self._log.write(table)
        self._rows += table.num_rows
        self._enqueue(table)

    def _enqueue(self, table: pa.Table) -> None:
        """Buffer ``table`` for the file, and write the row groups that are full."""
        if self._merge_at_seal:
            return
        self._buffer.append(table)
        self._buffered_rows += table.num_rows
        self._buffered_bytes += table.nbytes
        while self._buffered_rows >= self._group_rows or self._buffered_bytes >= self._group_bytes:
            buffered = self._buffered_rows
            self._write_groups(whole_only=True)
            if self._buffered_rows == buffered:
                # The estimate before the cast was larger than the table; no group is full.
                break

    def _write_groups(self, whole_only: bool) -> None:
        """Write the buffer as row groups; with ``whole_only`` keep a short rest buffered."""
        if not self._buffer:
            return
        schema = self._converter.schema
        assert schema is not None
        if self._writer is not None and not self._writer_schema.equals(schema):  # type: ignore[union-attr]
            self._drop_writer()
            return

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
        if self._writer is None:
            self._writer = self._new_writer(self._file, table.schema)
            self._writer_schema = table.schema
        self._write_to(self._writer, table)

    def _drop_writer(self) -> None:
        """Stop writing the file, whose schema no longer fits, and merge the parts at ``seal``."""
        # A live output's schema is fixed by its first rows, so it never widens.
        assert not self.live, "the schema of a live output widened"
        logger.info(
            "the schema of %s widened after its first row group; the file will be written "
            "again from the part files at the end of the run",
            self.path,
        )
        if self._logging:
            self._close_writer_quietly()
            self._file.unlink(missing_ok=True)
        else:
            self._start_logging()
        self._merge_at_seal = True
        self._buffer = []
        self._buffered_rows = self._buffered_bytes = 0

    def _start_logging(self) -> None:
        """Keep the file so far as the first part, and the buffered rows as the next."""
        # A run without a checkpoint has written no parts, so the rows of the
        # file exist nowhere else.
        writer, self._writer = self._writer, None
        writer.close()
        self._log.adopt(self._file, self.part_suffix)
        self._logging = True
        for table in self._buffer:
            self._log.write(table)

    def commit(self) -> dict[str, Any]:
        if self.live:
            # A live file cannot be closed and reopened; its rows are durable only at the end.
            return {"rows": self._rows, "live": 1}
        if not self._logging:
            return {"rows": self._rows}
        parts = self._log.commit()
        return {"parts": parts, "rows": self._rows, "converter": self._converter.state()}

    def seal(self) -> None:
        self.check_target()
        self.commit()
        self._write_groups(whole_only=False)
        if self._merge_at_seal:
            self._merge_parts()
        else:
            if self._writer is None:
                # No row arrived: the file still has a schema.
                self._writer = self._new_writer(self._file, self._empty_schema())
            writer, self._writer = self._writer, None
            writer.close()
        fsync_file(self._file)
        fsync_directory(self._file.parent)

    def _empty_schema(self) -> pa.Schema:
        return self._converter.schema or EMPTY_SCHEMA

    def _merge_parts(self) -> None:
        target = partial_path(self.path)
        target.unlink(missing_ok=True)
        schema = unify(self._log.schemas())
        try:
            self._merge(self._log.batches(), schema, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _merge(self, batches: Iterable[pa.RecordBatch], schema: pa.Schema, target: Path) -> None:
        # Parts end wherever a commit came, so the merge regroups the rows
        # and only the last group of the file is short.
        pending: list[pa.Table] = []
        pending_rows = pending_bytes = 0
        writer = self._new_writer(target, schema)
        try:
            for batch in batches:
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
            self._log.remove()

    def close(self) -> None:
        # Neither the file nor the open part is in a checkpoint: a resume
        # deletes both and writes the file again from the committed parts.
        self._close_writer_quietly()
        self._log.close()

    def _close_writer_quietly(self) -> None:
        writer, self._writer = self._writer, None
        close_quietly(writer)

    def discard(self) -> None:
        self.close()
        self._log.remove()
        partial_path(self.path).unlink(missing_ok=True)


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
