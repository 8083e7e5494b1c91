"""The run of ``tests.resumable_run`` with a SIGKILL at a chosen point.

    python -m tests.crash_run POINT AFTER OUT COUNT

POINT names where the process kills itself, on the AFTER-th time it gets
there (counting from 1):

- ``checkpoint-staged``: the checkpoint's values are written into the
  SQLite transaction but not committed.
- ``checkpoint-committed``: right after a checkpoint commit.
- ``jsonl-write``: half way through writing a batch of JSON Lines.
- ``parquet-row-group``: after a row group went into the open Parquet file.
- ``ipc-batch``: after a record batch went into an open Arrow IPC file: a
  part file of the Parquet or Arrow IPC output, or the Arrow IPC file.
- ``after-rename``: right after an output was renamed to its final name.
- ``before-publish``: every output is sealed, and the process dies before
  the AFTER-th output is renamed to its final name.
- ``parts-removal``: a Parquet or Arrow IPC output was renamed to its final
  name, and the process dies after removing the first file of its part
  folder, on the AFTER-th such folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from syncagg import checkpoint
from syncagg.outputs import base, files, jsonlines
from tests import resumable_run


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counting(original: Callable[..., Any], after: int, before: bool) -> Callable[..., Any]:
    calls = 0
    lock = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        # Each call keeps its own number: writer threads of two outputs call
        # the same method at once, and a check of the shared count after the
        # call could then miss the kill point in both.
        with lock:
            calls += 1
            number = calls
        if before and number == after:
            _die()
        result = original(*args, **kwargs)
        if not before and number == after:
            _die()
        return result

    return wrapper


def _half_write(original: Callable[..., Any], after: int) -> Callable[..., Any]:
    calls = 0

    def write(self: jsonlines.JsonLines, rows: list[dict[str, Any]]) -> None:
        nonlocal calls
        calls += 1
        # A batch of one row has no half, so the first longer batch from the
        # AFTER-th on is cut.
        if calls >= after and len(rows) > 1:
            original(self, rows[: len(rows) // 2])
            self._file.flush()
            _die()
        original(self, rows)

    return write


def _die_removing_parts(original: Callable[..., Any], after: int) -> Callable[..., Any]:
    """Wrap ``shutil.rmtree`` to die after it removed one file of the AFTER-th part folder."""
    calls = 0

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        folder = Path(path)
        files = sorted(folder.iterdir()) if ".parts" in folder.name and folder.is_dir() else []
        if files:
            calls += 1
            if calls == after:
                files[0].unlink()
                _die()
        original(path, *args, **kwargs)

    return rmtree


def main() -> None:
    point, after = sys.argv[1], int(sys.argv[2])
    sys.argv = [sys.argv[0], *sys.argv[3:]]

    if point == "checkpoint-staged":
        checkpoint.Checkpoint._commit = _counting(checkpoint.Checkpoint._commit, after, before=True)  # type: ignore[method-assign]
    elif point == "checkpoint-committed":
        checkpoint.Checkpoint._commit = _counting(checkpoint.Checkpoint._commit, after, before=False)  # type: ignore[method-assign]
    elif point == "jsonl-write":
        jsonlines.JsonLines.write = _half_write(jsonlines.JsonLines.write, after)  # type: ignore[method-assign]
    elif point == "parquet-row-group":
        pq.ParquetWriter.write_table = _counting(pq.ParquetWriter.write_table, after, before=False)  # type: ignore[method-assign]
    elif point == "ipc-batch":
        pa.ipc.RecordBatchFileWriter.write_table = _counting(
            pa.ipc.RecordBatchFileWriter.write_table, after, before=False
        )
    elif point == "before-publish":
        base.Output.publish = _counting(base.Output.publish, after, before=True)  # type: ignore[method-assign]
    elif point == "after-rename":
        files.os.replace = _counting(os.replace, after, before=False)  # type: ignore[attr-defined]
    elif point == "parts-removal":
        shutil.rmtree = _die_removing_parts(shutil.rmtree, after)  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown crash point {point!r}")

    resumable_run.main()


if __name__ == "__main__":
    main()
