"""Parquet output: one file encoded through the run, with Arrow IPC part files for a resume.

See ``syncagg/outputs/partfiles.py`` for how the file, the parts and
commits work, and ``syncagg/outputs/arrowconvert.py`` for schema inference,
widening and the declared schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from syncagg.outputs.partfiles import PartFileOutput

__all__ = ["Parquet"]

_MiB = 1024 * 1024


class Parquet(PartFileOutput):
    """Write rows to one Parquet file (``.parquet``, ``.pq``) with pyarrow.

    Dicts become struct columns, lists and 1-D numpy arrays list columns
    (2-D arrays nested lists), ``datetime`` a timestamp in microseconds
    (with its time zone when it has one), ``date`` date32, ``Decimal``
    decimal128, ``bytes`` binary. NaN and infinity are stored as they are.
    Every column chunk carries min/max statistics.

    Without ``schema``, the schema is inferred from the first rows and
    widens as rows arrive (see ``syncagg/outputs/arrowconvert.py``): a
    column of nulls takes the type of later values, integers widen to
    floats, and a column that appears later is added with nulls before. A
    row whose value shares no type with earlier rows is rejected (see
    ``invalid``), and so is a row that does not fit a declared ``schema``:
    a key outside it, or a value that would change in the cast, such as
    1.5 in an integer column.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name.
    row_group_rows : int, default 65536
        Maximum rows per row group.
    row_group_bytes : int, default 64 MiB
        Maximum size of a row group, measured as the uncompressed Arrow
        data in memory before it is written; a row group ends at whichever
        limit comes first.
    compression : str, default "zstd"
        Any codec that ``pyarrow.parquet.ParquetWriter`` accepts, such as
        ``"snappy"``, ``"gzip"``, ``"lz4"`` or ``"none"``.
    compression_level : int, optional
        The codec's level; by default the codec's own default.
    schema : pyarrow.Schema, optional
        The schema of every row. A missing key is a null.
    live : bool, default False
        Write one file under the final name instead of part files. Not
        crash safe: until the run completes the file has no footer and no
        reader can open it, and after a crash the run cannot resume. The
        schema is fixed by the first row group, so later rows that need a
        wider type are rejected.
    invalid : {"error", "dead_letter"}, default "error"
        What to do with a row that does not fit (see ``Output``).
    part_compression : {None, "lz4", "zstd"}, default None
        Buffer compression of the Arrow IPC part files that keep the rows
        for a resume until the run completes (see ``docs/outputs.md``).
        Uncompressed parts cost the least time but take the Arrow size of
        the rows on disk. "lz4" and "zstd" take less space for more CPU
        time. A run without a checkpoint writes no part files.
    """

    format = "parquet"
    suffixes = (".parquet", ".pq")
    description = "Apache Parquet: one file with one schema"
    part_suffix = ".parquet"

    def __init__(
        self,
        path: str | os.PathLike[str],
        row_group_rows: int = 65536,
        compression: str = "zstd",
        schema: pa.Schema | None = None,
        *,
        row_group_bytes: int = 64 * _MiB,
        compression_level: int | None = None,
        live: bool = False,
        invalid: str = "error",
        part_compression: str | None = None,
    ) -> None:
        if not isinstance(row_group_rows, int) or row_group_rows < 1:
            raise ValueError(f"row_group_rows must be a positive int, got {row_group_rows!r}")
        if not isinstance(row_group_bytes, int) or row_group_bytes < 1:
            raise ValueError(f"row_group_bytes must be a positive int, got {row_group_bytes!r}")
        super().__init__(
            path,
            schema=schema,
            group_rows=row_group_rows,
            group_bytes=row_group_bytes,
            live=live,
            invalid=invalid,
            part_compression=part_compression,
        )
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.compression = compression
        self.compression_level = compression_level

    def settings(self) -> dict[str, Any]:
        schema = None if self.schema is None else self.schema.to_string()
        settings: dict[str, Any] = {
            "row_group_rows": self.row_group_rows,
            "compression": self.compression,
            "schema": schema,
        }
        # Added only when changed, so checkpoints of earlier runs still match.
        if self.row_group_bytes != 64 * _MiB:
            settings["row_group_bytes"] = self.row_group_bytes
        if self.compression_level is not None:
            settings["compression_level"] = self.compression_level
        return settings

    def _new_writer(self, path: Path, schema: pa.Schema) -> pq.ParquetWriter:
        return pq.ParquetWriter(
            path,
            schema,
            compression=self.compression,
            compression_level=self.compression_level,
            write_statistics=True,
        )

    def _write_to(self, writer: pq.ParquetWriter, table: pa.Table) -> None:
        writer.write_table(table, row_group_size=max(1, table.num_rows))
