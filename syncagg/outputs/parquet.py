"""Parquet output: part files committed at each checkpoint, merged at the end.

A Parquet file cannot be read until its footer is written at close, so an
open file cannot be part of a checkpoint. This output writes row groups into
numbered part files in a hidden directory beside the final path, closes the
current part at each checkpoint, and records how many parts are complete.
``finish`` combines the parts into one file under a temporary name and
renames it to the final name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from syncagg.errors import CheckpointError
from syncagg.outputs.base import Output, partial_path
from syncagg.outputs.files import fsync_directory, publish

__all__ = ["Parquet"]


class Parquet(Output):
    """Write rows to a Parquet file with pyarrow's ``ParquetWriter``.

    The schema is inferred from the first rows unless given. It widens as
    rows arrive: a column that held only nulls takes the type of later
    values, integers widen to floats, and a column that appears later is
    added with nulls in the earlier rows. Values that cannot share a type
    (for example strings and integers in one column) raise ``ValueError``,
    which the run reports as ``OutputError``. A declared ``schema`` does not
    help there, so return one type per column from the job function.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name.
    row_group_rows : int, default 65536
        Rows per row group in the final file.
    compression : str, default "zstd"
        Any codec that ``pyarrow.parquet.ParquetWriter`` accepts.
    schema : pyarrow.Schema, optional
        The schema of every row; keys outside it are an error.
    """

    format = "parquet"
    suffixes = (".parquet", ".pq")

    def __init__(
        self,
        path: str | os.PathLike[str],
        row_group_rows: int = 65536,
        compression: str = "zstd",
        schema: pa.Schema | None = None,
    ) -> None:
        super().__init__(path)
        if not isinstance(row_group_rows, int) or row_group_rows < 1:
            raise ValueError(f"row_group_rows must be a positive int, got {row_group_rows!r}")
        self.row_group_rows = row_group_rows
        self.compression = compression
        self.schema = schema

    def settings(self) -> dict[str, Any]:
        schema = None if self.schema is None else self.schema.to_string()
        return {"row_group_rows": self.row_group_rows, "compression": self.compression, "schema": schema}

    def open(self, position: Any | None) -> None:
        self._parts = partial_path(self.path, ".parts")
        self._buffer: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._schema = self.schema
        self._rows = 0

        if position is None:
            shutil.rmtree(self._parts, ignore_errors=True)
            self._parts.mkdir()
            self._committed = 0
            return
        self._resume(int(position["parts"]), int(position["rows"]))

    def _resume(self, parts: int, rows: int) -> None:
        if not self._parts.is_dir():
            raise CheckpointError(
                f"cannot resume: the part directory {str(self._parts)!r} that the "
                "checkpoint refers to is missing; delete the checkpoint file to start afresh"
            )
        for path in self._parts.iterdir():
            if not _is_part(path) or _part_index(path) >= parts:
                path.unlink()

        self._committed = parts
        self._rows = rows
        if parts and self._schema is None:
            self._schema = pq.read_schema(self._part_path(parts - 1))

    def _part_path(self, index: int) -> Path:
        return self._parts / f"part-{index:06d}.parquet"

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._buffer.extend(rows)
        while len(self._buffer) >= self.row_group_rows:
            chunk = self._buffer[: self.row_group_rows]
            del self._buffer[: self.row_group_rows]
            self._write_table(chunk)

    def _write_table(self, rows: list[dict[str, Any]]) -> None:
        table = self._to_table(rows)
        if self._writer is not None and not self._writer.schema.equals(table.schema):
            self._close_part()
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._part_path(self._committed), table.schema, compression=self.compression
            )
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self._rows += table.num_rows

    def _to_table(self, rows: list[dict[str, Any]]) -> pa.Table:
        if self.schema is not None:
            keys: set[str] = set().union(*rows)
            extra = sorted(keys.difference(self.schema.names))
            if extra:
                raise ValueError(f"rows have keys {extra} outside the declared Parquet schema")
            # NOTE: pyarrow (26) truncates a float such as 1.5 to 1 in a
            # declared integer column instead of raising.
            return pa.Table.from_pylist(rows, schema=self.schema)

        # Rows are inferred on their own and then widened, because converting
        # them with the schema so far would truncate floats in an int column.
        table = _infer_table(rows)
        if self._schema is None:
            self._schema = table.schema
            return table
        return self._widen(table, self._schema)

    def _widen(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        try:
            wider = pa.unify_schemas([schema, table.schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(
                "rows do not fit the Parquet schema inferred from earlier rows "
                f"({exc}); {_ONE_TYPE_FIX}"
            ) from None
        self._schema = wider
        return _conform(table, wider)

    def commit(self) -> dict[str, int]:
        if self._buffer:
            rows, self._buffer = self._buffer, []
            self._write_table(rows)
        self._close_part()
        fsync_directory(self._parts)
        return {"parts": self._committed, "rows": self._rows}

    def _close_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        path = self._part_path(self._committed)
        with open(path, "rb") as file:
            os.fsync(file.fileno())
        self._writer = None
        self._committed += 1

    def finish(self) -> None:
        self.commit()
        parts = [self._part_path(i) for i in range(self._committed)]
        schemas = [pq.read_schema(part) for part in parts]
        final = _final_schema(schemas, self._schema)

        if len(parts) == 1 and schemas[0].equals(final):
            publish(parts[0], self.path)
        else:
            temporary = partial_path(self.path, ".tmp")
            try:
                self._merge(parts, final, temporary)
                publish(temporary, self.path)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        shutil.rmtree(self._parts, ignore_errors=True)

    def _merge(self, parts: list[Path], schema: pa.Schema, target: Path) -> None:
        # Every commit ends a part with a short row group. The merge regroups
        # the rows, so that only the last row group of the file is short.
        size = self.row_group_rows
        pending: list[pa.Table] = []
        with pq.ParquetWriter(target, schema, compression=self.compression) as writer:
            for part in parts:
                source = pq.ParquetFile(part)
                for batch in source.iter_batches(batch_size=size):
                    pending.append(_conform(pa.Table.from_batches([batch]), schema))
                    table = pa.concat_tables(pending)
                    whole = table.num_rows - table.num_rows % size
                    if whole:
                        writer.write_table(table.slice(0, whole), row_group_size=size)
                    pending = [table.slice(whole)]
                source.close()
            rest = pa.concat_tables(pending) if pending else None
            if rest is not None and rest.num_rows:
                writer.write_table(rest, row_group_size=size)

    def close(self) -> None:
        # The open part is not in any checkpoint, so a resume deletes it.
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self._parts, ignore_errors=True)


_ONE_TYPE_FIX = (
    "return one type per column from the job function, for example str(value) "
    "for a column that mixes text and numbers"
)


def _infer_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Infer a table from rows, or raise ``ValueError`` naming a mixed column."""
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        column = _mixed_column(rows)
        raise ValueError(
            f"Parquet column {column!r} has values that share no Arrow type "
            f"({exc}); {_ONE_TYPE_FIX}"
        ) from None


def _mixed_column(rows: list[dict[str, Any]]) -> str | None:
    """Return the first column whose values pyarrow cannot convert to one type."""
    keys = dict.fromkeys(key for row in rows for key in row)
    for key in keys:
        try:
            pa.array([row.get(key) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return key
    return None


def _is_part(path: Path) -> bool:
    return path.name.startswith("part-") and path.name.endswith(".parquet")


def _part_index(path: Path) -> int:
    return int(path.name[len("part-") : -len(".parquet")])


def _final_schema(schemas: list[pa.Schema], current: pa.Schema | None) -> pa.Schema:
    if not schemas:
        return current if current is not None else pa.schema([])
    return pa.unify_schemas(schemas, promote_options="permissive")


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``table`` to ``schema``, adding missing columns as nulls."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
