"""Compare folding in the collector with folding in the workers (Combine(..., in_workers=True)).

    python benchmarks/combine.py [--count N] [--runs R] [--workers W]

Each case runs the same job both ways: the workers send every value and the
collector folds them, or each worker folds its batches and sends one
accumulator per batch. For each way it prints the median over ``--runs`` runs
of the bytes that crossed the shared-memory ring into the parent and of the
wall time of ``Aggregator.run``, and the ratio of the two ways.

The bytes are counted by wrapping the function that decodes each batch in
the parent, so they are the encoded batches: values or accumulators, plus
the job ids, timings and errors that every batch carries.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import syncagg as sa  # noqa: E402
import syncagg.pool  # noqa: E402

VECTOR_LENGTH = 2048


def vector(x: int) -> np.ndarray:
    """Return a per-input vector of 2048 float64 (16 KiB), as a per-file feature count would be."""
    return np.full(VECTOR_LENGTH, float(x % 97))


def file_row(x: int) -> dict[str, Any]:
    """Return a small row for a file: its package and line count."""
    return {"path": f"pkg{x % 20}/mod{x}.py", "package": f"pkg{x % 20}", "lines": x % 400}


@dataclass(frozen=True)
class Case:
    """One job and the combiner that aggregates its values."""

    name: str
    fn: Callable[[int], Any]
    combiner: sa.Combiner


CASES = [
    Case("vectors: ArraySum of 16 KiB arrays", vector, sa.ArraySum()),
    Case("rows: GroupBy(package, Sum(lines))", file_row, sa.GroupBy("package", sa.Sum("lines"))),
]


def measure(case: Case, in_workers: bool, count: int, workers: int) -> tuple[int, float]:
    """Run the case once; return the bytes received from the ring and the elapsed seconds."""
    received: list[int] = []
    decode = syncagg.pool.decode_message

    def counting(view: memoryview, *args: Any) -> Any:
        received.append(view.nbytes)
        return decode(view, *args)

    syncagg.pool.decode_message = counting
    try:
        aggregator = sa.Aggregator(
            strategy=sa.Combine(case.combiner, in_workers=in_workers), workers=workers, progress=False
        )
        summary = aggregator.run(case.fn, range(count))
    finally:
        syncagg.pool.decode_message = decode
    if summary.counts["failed"]:
        # A figure from a run whose jobs failed would time the failures.
        raise RuntimeError(f"{case.name}: {summary.counts['failed']} of {count} jobs failed: {summary.failures[0]}")
    return sum(received), summary.elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="inputs per run (default 20000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per case and way; medians are printed (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args()

    print(f"{args.count} inputs, {args.workers} workers, median of {args.runs} runs, {os.cpu_count()} CPUs")
    print(f"{'case':40} {'folded in':10} {'MiB moved':>10} {'seconds':>8}")
    for case in CASES:
        runs: dict[bool, list[tuple[int, float]]] = {False: [], True: []}
        for _ in range(args.runs):
            # Alternate the two ways, so a change in machine load hits both.
            for in_workers in (False, True):
                runs[in_workers].append(measure(case, in_workers, args.count, args.workers))

        medians = {}
        for in_workers in (False, True):
            size = statistics.median(run[0] for run in runs[in_workers])
            seconds = statistics.median(run[1] for run in runs[in_workers])
            medians[in_workers] = (size, seconds)
            where = "workers" if in_workers else "collector"
            print(f"{case.name:40} {where:10} {size / 2**20:10.2f} {seconds:8.2f}")

        bytes_ratio = medians[False][0] / medians[True][0]
        time_ratio = medians[False][1] / medians[True][1]
        print(f"{'':40} {'ratio':10} {bytes_ratio:9.0f}x {time_ratio:7.2f}x")

if __name__ == "__main__":
    main()
