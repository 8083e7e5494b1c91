"""Output throughput: syncagg's columnar path beside the plain ways to write the same rows.

    python -m benchmarks.outputs [--quick] [--repeat N]

Every workload writes the same six-field rows (``id``, ``name``, ``value``,
``count``, ``flag``, ``group``), made in blocks of ``BLOCK`` rows, and runs
its variants alternately in this one process, ``repeat`` times each; the
figures are medians. syncagg's jobs return one ``pyarrow.RecordBatch`` per
block, built from columns in the worker.

- ``parquet``: syncagg to Parquet; ``ProcessPoolExecutor.map`` returning
  lists of dicts, collected into one list, ``Table.from_pylist`` and
  ``pq.write_table``; and pyarrow alone in one process, building the
  columns and calling ``pq.write_table``.
- ``jsonl``: syncagg to JSON Lines with ``encode_in_workers=True``; and one
  process that makes the same rows as dicts and encodes each with orjson.
- ``csv``: syncagg to CSV, which hands each table to pyarrow's CSV writer
  in the parent; and one process that builds the same table and calls
  ``pyarrow.csv.write_csv``.
- ``memory``: the parent's peak resident memory above its baseline for the
  syncagg Parquet run at two sizes, each in a fresh interpreter. Both sizes
  move more rows than the ring holds, because the ring's shared pages
  count in the parent's resident memory once it has touched them.

``rows(quick, repeat)`` returns the figures as rows for ``python -m
benchmarks``; ``main`` prints them as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

import syncagg as sa

BLOCK = 10_000
WORKERS = 2
FULL_ROWS = 1_000_000
QUICK_ROWS = 200_000

Row = dict[str, Any]


# The rows ----------------------------------------------------------------------


def block_columns(start: int, size: int = BLOCK) -> dict[str, Any]:
    """Return the columns of rows ``start`` to ``start + size - 1``."""
    ids = np.arange(start, start + size, dtype=np.int64)
    return {
        "id": ids,
        "name": [f"item-{i}" for i in range(start, start + size)],
        "value": ids * 0.5,
        "count": ids % 1000,
        "flag": ids % 2 == 0,
        "group": [f"g{i % 100}" for i in range(start, start + size)],
    }


def block_batch(start: int) -> pa.RecordBatch:
    """Return one block as a record batch: what a syncagg job returns."""
    return pa.record_batch(block_columns(start))


def block_rows(start: int) -> list[Row]:
    """Return one block as dicts: what a job of the plain approach returns."""
    return [
        {"id": i, "name": f"item-{i}", "value": i * 0.5, "count": i % 1000, "flag": i % 2 == 0, "group": f"g{i % 100}"}
        for i in range(start, start + BLOCK)
    ]


# The variants: each writes `count` rows into `folder` ---------------------------------


def syncagg_run(folder: Path, count: int, output: sa.Output, encode_in_workers: bool = False) -> sa.RunSummary:
    """Run syncagg over the blocks into one output; the strategy counts jobs and keeps no value."""
    aggregator = sa.Aggregator(
        strategy=sa.Combine(sa.Count()),
        outputs=[output],
        workers=WORKERS,
        progress=False,
        encode_in_workers=encode_in_workers,
    )
    return aggregator.run(block_batch, range(0, count, BLOCK))


def syncagg_parquet(folder: Path, count: int) -> None:
    syncagg_run(folder, count, sa.Parquet(folder / "rows.parquet"))


def plain_parquet(folder: Path, count: int) -> None:
    rows: list[Row] = []
    with ProcessPoolExecutor(WORKERS) as pool:
        for block in pool.map(block_rows, range(0, count, BLOCK)):
            rows.extend(block)
    pq.write_table(pa.Table.from_pylist(rows), folder / "plain.parquet", compression="zstd")


def pyarrow_parquet(folder: Path, count: int) -> None:
    table = pa.table(block_columns(0, count))
    pq.write_table(table, folder / "pyarrow.parquet", compression="zstd")


def syncagg_jsonl(folder: Path, count: int) -> None:
    syncagg_run(folder, count, sa.JsonLines(folder / "rows.jsonl"), encode_in_workers=True)


def orjson_jsonl(folder: Path, count: int) -> None:
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with open(folder / "orjson.jsonl", "wb") as file:
        for start in range(0, count, BLOCK):
            file.write(b"".join([dumps(row, option=newline) for row in block_rows(start)]))


def syncagg_csv(folder: Path, count: int) -> None:
    syncagg_run(folder, count, sa.Csv(folder / "rows.csv"))


def pyarrow_csv(folder: Path, count: int) -> None:
    pa_csv.write_csv(pa.table(block_columns(0, count)), folder / "pyarrow.csv")


Variant = tuple[str, Callable[[Path, int], None]]

WORKLOADS: dict[str, list[Variant]] = {
    "parquet": [
        ("syncagg", syncagg_parquet),
        ("ProcessPoolExecutor + from_pylist", plain_parquet),
        ("pyarrow, one process", pyarrow_parquet),
    ],
    "jsonl": [
        ("syncagg, encode_in_workers", syncagg_jsonl),
        ("orjson, one process", orjson_jsonl),
    ],
    "csv": [
        ("syncagg", syncagg_csv),
        ("pyarrow.csv, one process", pyarrow_csv),
    ],
}


# Measuring -----------------------------------------------------------------------------


def measure(variants: list[Variant], count: int, repeat: int) -> list[Row]:
    """Run each variant ``repeat`` times, alternating, and return one figure row per variant."""
    seconds: dict[str, list[float]] = {name: [] for name, _ in variants}
    for repetition in range(repeat):
        shift = repetition % len(variants)
        for name, run in variants[shift:] + variants[:shift]:
            folder = Path(tempfile.mkdtemp(prefix="syncagg-bench-"))
            try:
                began = time.perf_counter()
                run(folder, count)
                seconds[name].append(time.perf_counter() - began)
            finally:
                shutil.rmtree(folder)
    return [
        {"library": name, "items": count, "seconds": statistics.median(times), "runs": len(times), "unit": "rows/s"}
        for name, times in seconds.items()
    ]


def workload(name: str, quick: bool = False, repeat: int = 3) -> list[Row]:
    """Measure one workload of ``WORKLOADS``; rows carry ``ratio``: syncagg's throughput over theirs."""
    count = QUICK_ROWS if quick else FULL_ROWS
    figures = measure(WORKLOADS[name], count, repeat)
    first = figures[0]["seconds"]
    for row in figures:
        row["workload"] = f"outputs-{name}"
        row["ratio"] = row["seconds"] / first
    return figures


def parquet(quick: bool = False, repeat: int = 3) -> list[Row]:
    """Measure syncagg, the plain approach and pyarrow alone writing Parquet."""
    return workload("parquet", quick, repeat)


def jsonl(quick: bool = False, repeat: int = 3) -> list[Row]:
    """Measure syncagg and one orjson process writing JSON Lines."""
    return workload("jsonl", quick, repeat)


def csv(quick: bool = False, repeat: int = 3) -> list[Row]:
    """Measure syncagg and one pyarrow.csv process writing CSV."""
    return workload("csv", quick, repeat)


def memory(quick: bool = False, repeat: int = 1) -> list[Row]:
    """Measure the parent's peak memory above its baseline for syncagg to Parquet at two sizes."""
    # The default 64 MiB ring carries about 1.6 million of these rows before
    # every page of it has been touched once.
    sizes = (2 * FULL_ROWS, 5 * FULL_ROWS)
    figures = []
    for count in sizes:
        command = [sys.executable, "-m", "benchmarks.outputs", "--memory-child", str(count)]
        root = Path(__file__).resolve().parent.parent
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True, timeout=600)
        figures.append({"workload": "outputs-memory", **json.loads(done.stdout.splitlines()[-1])})
    return figures


def memory_child(count: int) -> Row:
    """Run syncagg to Parquet in this fresh interpreter and return its peak memory above baseline."""
    baseline = psutil.Process().memory_info().rss
    folder = Path(tempfile.mkdtemp(prefix="syncagg-bench-"))
    try:
        began = time.perf_counter()
        summary = syncagg_run(folder, count, sa.Parquet(folder / "rows.parquet"))
        seconds = time.perf_counter() - began
    finally:
        shutil.rmtree(folder)
    return {
        "library": "syncagg",
        "items": count,
        "seconds": seconds,
        "runs": 1,
        "unit": "rows/s",
        "peak_memory": max(0, summary.peak_memory - baseline),
    }


def rows(quick: bool, repeat: int) -> list[Row]:
    """Return every workload's figures, for the ``python -m benchmarks`` runner."""
    return [*parquet(quick, repeat), *jsonl(quick, repeat), *csv(quick, repeat), *memory(quick)]


def markdown(figures: list[Row]) -> str:
    """Return the figures as a Markdown table."""
    lines = [
        "| workload | variant | rows | seconds | rows/s | syncagg's speed-up | parent peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in figures:
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else ""
        peak = f"{row['peak_memory'] / 2**20:.0f}" if "peak_memory" in row else ""
        lines.append(
            f"| {row['workload']} | {row['library']} | {row['items']:,} | {row['seconds']:.2f} "
            f"| {row['items'] / row['seconds']:,.0f} | {ratio} | {peak} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.outputs", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows instead of {FULL_ROWS:,}")
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="runs of each variant (default 3)")
    parser.add_argument("--memory-child", type=int, metavar="ROWS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return 0
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    print(f"{os.cpu_count()} CPUs, {WORKERS} workers, Python {sys.version.split()[0]}, pyarrow {pa.__version__}")
    print(markdown(rows(args.quick, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
