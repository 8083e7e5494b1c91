"""Functions the benchmark workers run, and the folds the parents apply.

They live in their own module so every library can pickle them by
reference, including joblib's workers, which start a fresh interpreter.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

# 1 MiB of float64 per array result.
ARRAY_LENGTH = 131_072
# Bytes of padding in a slow-consumer result, so a backlog shows in memory.
PAYLOAD_BYTES = 1024


def small_row(i: int) -> dict[str, Any]:
    """Return a six-field row, the typical per-file or per-record result."""
    return {
        "id": i,
        "group": i % 64,
        "x": i * 0.5,
        "y": i % 7,
        "ok": i % 3 != 0,
        "label": f"item-{i % 1000}",
    }


def padded_row(i: int) -> dict[str, Any]:
    """Return a row that carries about 1 KiB of text."""
    return {"id": i, "payload": "x" * PAYLOAD_BYTES}


def array_result(i: int) -> np.ndarray:
    """Return a 1 MiB float64 array whose elements all equal ``i % 7``."""
    return np.full(ARRAY_LENGTH, float(i % 7))


def add_row(totals: list[float], row: dict[str, Any]) -> list[float]:
    """Add one row to ``[count, sum of x, sum of y]`` in place."""
    totals[0] += 1
    totals[1] += row["x"]
    totals[2] += row["y"]
    return totals


def add_array(total: np.ndarray | None, array: np.ndarray) -> np.ndarray:
    """Add ``array`` into ``total`` in place; the first array becomes the total."""
    if total is None:
        return array.copy()
    np.add(total, array, out=total)
    return total


def count_one(count: int, value: Any) -> int:
    """Count a value; the fold for runs whose outputs are the point."""
    return count + 1


class SlowConsumer:
    """A consumer that sleeps 1 ms every 50 results: at most about 50,000 results/s.

    Sleeping releases the interpreter lock, like a consumer that waits on a
    database or a network, so the libraries' own threads still run.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, value: Any) -> None:
        self.count += 1
        if self.count % 50 == 0:
            time.sleep(0.001)
