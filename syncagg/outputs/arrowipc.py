"""Arrow IPC output (Feather v2): one file written through the run, with part files for a resume.

An Arrow IPC file, like a Parquet file, ends with a footer and cannot be
read before it is closed, so it uses the same part files as Parquet (see
``syncagg/outputs/partfiles.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from syncagg.outputs.partfiles import PartFileOutput

__all__ = ["ArrowIpc"]

_MiB = 1024 * 1024
_CODECS = (None, "lz4", "zstd")


class ArrowIpc(PartFileOutput):
    """Write rows to one Arrow IPC file, also known as Feather v2 (``.arrow``, ``.feather``).

    The types and the schema policy are those of ``Parquet``. The file is
    uncompressed by default, so readers can memory-map it and read columns
    without a copy.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name.
    batch_rows : int, default 65536
        Maximum rows per record batch.
    batch_bytes : int, default 64 MiB
        Maximum Arrow memory of a record batch; a batch ends at whichever
        limit comes first.
    compression : {None, "lz4", "zstd"}, default None
        Buffer compression. A compressed file cannot be memory-mapped
        without decompressing.
    schema : pyarrow.Schema, optional
        The schema of every row. A missing key is a null.
    live : bool, default False
        Write one file under the final name instead of part files. Not
        crash safe: until the run completes the file has no footer, and
        after a crash the run cannot resume.
    invalid : {"error", "dead_letter"}, default "error"
        What to do with a row that does not fit (see ``Output``).
    part_compression : {None, "lz4", "zstd"}, default None
        Buffer compression of the Arrow IPC part files that keep the rows
        for a resume until the run completes (see ``docs/outputs.md``).
        Uncompressed parts cost the least time but take the Arrow size of
        the rows on disk. "lz4" and "zstd" take less space for more CPU
        time. A run without a checkpoint writes no part files.
    """

    format = "arrow"
    suffixes = (".arrow", ".feather")
    description = "Arrow IPC file (Feather v2)"

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_rows: int = 65536,
        compression: str | None = None,
        schema: pa.Schema | None = None,
        *,
        batch_bytes: int = 64 * _MiB,
        live: bool = False,
        invalid: str = "error",
        part_compression: str | None = None,
    ) -> None:
        if compression not in _CODECS:
            raise ValueError(f"compression must be one of {_CODECS}, got {compression!r}")
        super().__init__(
            path,
            schema=schema,
            group_rows=batch_rows,
            group_bytes=batch_bytes,
            live=live,
            invalid=invalid,
            part_compression=part_compression,
        )
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.compression = compression

    def settings(self) -> dict[str, Any]:
        schema = None if self.schema is None else self.schema.to_string()
        return {
            "batch_rows": self.batch_rows,
            "batch_bytes": self.batch_bytes,
            "compression": self.compression,
            "schema": schema,
        }

    def _new_writer(self, path: Path, schema: pa.Schema) -> pa.ipc.RecordBatchFileWriter:
        options = pa.ipc.IpcWriteOptions(compression=self.compression)
        return pa.ipc.new_file(str(path), schema, options=options)

    def _write_to(self, writer: pa.ipc.RecordBatchFileWriter, table: pa.Table) -> None:
        # One record batch per group, even when the rows arrived in several chunks.
        writer.write_table(table.combine_chunks(), max_chunksize=max(1, table.num_rows))
