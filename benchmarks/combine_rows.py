"""Rows for the runner from ``benchmarks/combine.py``, which has no ``rows`` function of its own.

It runs that module's cases through its ``measure`` function, the two ways
alternating as in its ``main``, and reports medians.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import combine

COUNT = {True: 20_000, False: 200_000}
MiB = 1024 * 1024


def rows(quick: bool, repeat: int) -> list[dict[str, Any]]:
    """Return one row per case and way of folding: median seconds and MiB moved."""
    count = COUNT[quick]
    found = []
    for case in combine.CASES:
        runs: dict[bool, list[tuple[int, float]]] = {False: [], True: []}
        for _ in range(repeat):
            for in_workers in (False, True):
                runs[in_workers].append(combine.measure(case, in_workers, count, workers=2))
        for in_workers in (False, True):
            moved = statistics.median(run[0] for run in runs[in_workers])
            found.append({
                "workload": case.name,
                "library": "syncagg, folded in the workers" if in_workers else "syncagg, folded in the collector",
                "items": count,
                "unit": "results/s",
                "seconds": statistics.median(run[1] for run in runs[in_workers]),
                "runs": repeat,
                "note": f"{moved / MiB:,.2f} MiB moved through the ring",
            })
    return found
