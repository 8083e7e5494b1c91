"""Functions that the command-line tests run by ``MODULE:FUNCTION``."""

from __future__ import annotations

import time
from typing import Any


def square(item: Any) -> dict[str, Any]:
    """Return ``x``, its square and its parity; ``x`` comes from a number, a string or a row."""
    x = int(item["x"]) if isinstance(item, dict) else int(item)
    return {"x": x, "square": x * x, "parity": "even" if x % 2 == 0 else "odd"}


def square_but_seven(item: Any) -> dict[str, Any]:
    """Return ``square(item)``, but raise ``ValueError`` for 7."""
    row = square(item)
    if row["x"] == 7:
        raise ValueError("7 is not welcome")
    return row


def echo(item: Any) -> Any:
    """Return the input unchanged."""
    return item


def slow_square(item: Any) -> dict[str, Any]:
    """Return ``square(item)`` after 20 ms, so a run lasts long enough to be interrupted."""
    time.sleep(0.02)
    return square(item)


def slow_square_failing_on_sevens(item: Any) -> dict[str, Any]:
    """Return ``slow_square(item)``, but raise ``ValueError`` for multiples of 7."""
    row = slow_square(item)
    if row["x"] % 7 == 0:
        raise ValueError(f"{row['x']} is a multiple of 7")
    return row


def hang_on_three(item: Any) -> dict[str, Any]:
    """Return ``square(item)``, but sleep for 10 minutes on 3."""
    row = square(item)
    if row["x"] == 3:
        time.sleep(600)
    return row


NOT_A_FUNCTION = 42


def count_jobs(total: int, value: Any) -> int:
    """Count one more result, for a ``Reduce`` in tests."""
    return total + 1


def slow_echo(item: Any) -> Any:
    """Return the input after 100 ms, longer than the batch latency, so each result goes alone."""
    time.sleep(0.1)
    return item
