"""Job functions and helpers for the output tests, importable by name in worker processes."""

from __future__ import annotations

import datetime
import errno
import json
import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

BLOCK_ROWS = 100


def arrow_block(start: int) -> pa.RecordBatch:
    """Return rows ``start`` to ``start + BLOCK_ROWS - 1`` as a record batch built from columns."""
    ids = np.arange(start, start + BLOCK_ROWS, dtype=np.int64)
    return pa.record_batch(
        {
            "id": ids,
            "name": [f"item-{i}" for i in range(start, start + BLOCK_ROWS)],
            "half": ids * 0.5,
            "even": ids % 2 == 0,
        }
    )


def block_rows(start: int) -> list[dict[str, Any]]:
    """Return the rows of ``arrow_block(start)`` as dicts."""
    return [
        {"id": i, "name": f"item-{i}", "half": i * 0.5, "even": i % 2 == 0}
        for i in range(start, start + BLOCK_ROWS)
    ]


def score_row(x: int) -> dict[str, Any]:
    """Return a row whose ``score`` is 1.5 when ``x`` is a multiple of 10, else an integer."""
    return {"x": x, "score": 1.5 if x % 10 == 0 else x}


def wide_int_row(x: int) -> dict[str, Any]:
    """Return a row whose ``v`` is 2**53 + 1 for ``x == 0``, 2**64 for 3, 0.5 for 5, else ``x``."""
    values = {0: 2**53 + 1, 3: 2**64, 5: 0.5}
    return {"x": x, "v": values.get(x, x)}


def slow_square(x: int) -> dict[str, int]:
    """Return ``{"x": x, "square": x * x}`` after 2 ms, so a run lasts long enough to checkpoint."""
    time.sleep(0.002)
    return {"x": x, "square": x * x}


def late_column_row(x: int) -> dict[str, Any]:
    """Return ``{"x": x, "name": ...}``, with an ``extra`` column from ``x == 10`` on."""
    row: dict[str, Any] = {"x": x, "name": f"row {x}"}
    if x >= 10:
        row["extra"] = x * 10
    return row


def typed_row(i: int) -> dict[str, Any]:
    """Return a row with one value of each type the formats map."""
    return {
        "int": np.int64(i),
        "float": np.float32(0.5),
        "flag": np.bool_(i % 2 == 0),
        "vector": np.arange(3) + i,
        "when": datetime.datetime(2024, 5, 1, 12, 30, i),
        "when_utc": datetime.datetime(2024, 5, 1, 12, 30, i, tzinfo=datetime.UTC),
        "day": datetime.date(2024, 5, 1 + i),
        "price": Decimal("10.25") + i,
        "blob": bytes([i, 255]),
        "nothing": None,
        "nested": {"a": i, "tags": ["x", "y"]},
        "ratio": float("nan") if i == 0 else float("inf"),
    }


class FailingWrite:
    """Make an output class raise ``OSError(ENOSPC)`` once it has written ``after`` batches."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.calls = 0

    def install(self, output_type: type) -> None:
        original = output_type.write

        def write(output: Any, rows: list[dict[str, Any]]) -> None:
            self.calls += 1
            if self.calls > self.after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(output.path))
            original(output, rows)

        output_type.write = write


def run_with_full_disk() -> None:
    """``python -m tests.output_jobs OUT COUNT FAIL_AFTER``: a run whose JSON Lines output fails.

    FAIL_AFTER is the number of batches the output writes before every
    further write raises ``OSError(ENOSPC)``; 0 turns the fault off. Prints
    a JSON report: the error text, or the counts of a completed run.
    """
    import syncagg as sa
    from syncagg.outputs.jsonlines import JsonLines

    out, count, fail_after = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if fail_after:
        FailingWrite(fail_after).install(JsonLines)
    aggregator = sa.Aggregator(
        strategy=sa.Combine(sa.Count()),
        outputs=[out / "rows.jsonl", out / "rows.parquet"],
        checkpoint=out / "run.sqlite",
        workers=2,
        progress=False,
        checkpoint_seconds=0.05,
        checkpoint_results=50,
        batch_latency=0.01,
    )
    try:
        summary = aggregator.run(slow_square, range(count))
    except sa.OutputError as error:
        print(json.dumps({"error": str(error)}))
        return
    print(json.dumps({"counts": dict(summary.counts)}))


def _kill_after_replace(target: Path) -> None:
    """Make ``os.replace`` SIGKILL this process right after it renames a file onto ``target``."""
    replace = os.replace

    def replace_then_die(source: Any, destination: Any) -> None:
        replace(source, destination)
        if Path(destination) == target:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_then_die  # type: ignore[assignment]


def run_live_csv() -> None:
    """``python -m tests.output_jobs live-csv OUT COUNT KILL``: a live CSV run with ``extra="extend"``.

    With KILL set to ``after-publish``, the process kills itself with SIGKILL
    right after the rewritten file replaced the one under the final name.
    With ``none`` it runs to the end. Prints the run's counts as JSON.
    """
    import syncagg as sa

    out, count, kill = Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    path = out / "rows.csv"
    if kill == "after-publish":
        _kill_after_replace(path)
    aggregator = sa.Aggregator(
        outputs=[sa.Csv(path, extra="extend", live=True)],
        checkpoint=out / "run.sqlite",
        # One thread and one job per chunk write the rows one by one in
        # order, so the header is fixed before the extra column arrives.
        # Forked workers would also keep the checkpoint's lock for a moment
        # after their parent is killed.
        workers=sa.Threads(1),
        chunksize=1,
        progress=False,
        checkpoint_results=5,
    )
    summary = aggregator.run(late_column_row, range(count))
    print(json.dumps({"counts": dict(summary.counts)}))


if __name__ == "__main__":
    if sys.argv[1] == "live-csv":
        run_live_csv()
    else:
        run_with_full_disk()
