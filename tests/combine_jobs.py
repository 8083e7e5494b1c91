"""Functions that the combiner, pipeline and stream tests run in worker processes.

They live in a module of their own so that every start method can import
them by name in a worker.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
from typing import Any

import numpy as np


def row(x: int) -> dict[str, Any]:
    """Return a row with a group, an int, a float and a small vector for ``x``."""
    return {
        "x": x,
        "group": f"g{x % 3}",
        "lines": x % 50,
        "ratio": x / 7,
        "vector": np.full(4, x, dtype=np.int64),
    }


def row_failing_on_sevens(x: int) -> dict[str, Any]:
    """Return ``row(x)``, but raise ``ValueError`` when ``x`` is a multiple of 7."""
    if x % 7 == 0:
        raise ValueError(f"{x} is a multiple of 7")
    return row(x)


def text(x: int) -> str:
    """Return ``x`` as text, after a pause that grows with ``x % 5``, so results arrive out of order."""
    time.sleep((x % 5) * 0.002)
    return f"{x},"


def text_failing_on_sevens(x: int) -> str:
    """Return ``text(x)``, but raise ``ValueError`` when ``x`` is a multiple of 7."""
    if x % 7 == 0:
        raise ValueError(f"{x} is a multiple of 7")
    return text(x)


def vector(x: int) -> np.ndarray:
    """Return a float64 array of 2000 copies of ``x``."""
    return np.full(2000, float(x))


def numpy_row(x: int) -> dict[str, Any]:
    """Return a row of numpy scalars, a NaN for odd ``x`` and a naive datetime."""
    return {
        "x": np.int64(x),
        "half": np.float64(x / 2) if x % 2 == 0 else np.float64("nan"),
        "at": datetime.datetime(2024, 1, 1, 0, 0) + datetime.timedelta(hours=x),
    }


def even(row: dict[str, Any]) -> bool:
    """Whether a row's ``x`` is even."""
    return row["x"] % 2 == 0


def with_kib(row: dict[str, Any]) -> dict[str, Any]:
    """Return the row with ``kib``: ``lines`` over 1024; raise ``KeyError`` without ``lines``."""
    return {"x": row["x"], "group": row["group"], "kib": row["lines"] / 1024}


def drop_lines_on_fives(row: dict[str, Any]) -> dict[str, Any]:
    """Return the row without ``vector``; without ``lines`` too when ``x`` is a multiple of 5."""
    kept = {key: value for key, value in row.items() if key != "vector"}
    if row["x"] % 5 == 0:
        del kept["lines"]
    return kept


def slow_square(x: int) -> int:
    """Return ``x * x`` after 5 ms."""
    time.sleep(0.005)
    return x * x



def text_killing_on_13(x: int) -> str:
    """Return ``text(x)``, but SIGKILL the worker on input 13, as the OOM killer would."""
    if x == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return text(x)


def sleepy_row(x: int) -> dict[str, Any]:
    """Return ``row(x)`` after 5 ms, so a run lasts long enough to be killed."""
    time.sleep(0.005)
    return row(x)
