"""Medians, ratios and the targets, from the measurements of one run."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.measure import Measurement

MiB = 1024 * 1024
# Memory targets for the strategies that do not keep results.
STREAMING = ("syncagg Reduce", "syncagg Stream")
MAX_PEAK_BYTES = 150 * MiB
MAX_PEAK_SPREAD = 0.10
# Throughput with checkpoints at the default interval, as a share of without.
MIN_CHECKPOINT_SHARE = 0.95


@dataclass
class Row:
    """The medians of one variant at one size, as they appear in the table."""

    workload: str
    size: int
    library: str
    runs: int
    seconds: float | None = None
    peak_bytes: int | None = None
    unit: str = "results/s"
    ratio: float | None = None
    note: str = ""
    # A throughput reported directly, by a module that gives no result count.
    rate: float | None = None

    @property
    def throughput(self) -> float | None:
        if self.rate is not None:
            return self.rate
        if self.seconds is None or self.seconds <= 0 or self.size <= 0:
            return None
        return self.size / self.seconds


def summarize(workload: str, size: int, unit: str, library: str, runs: Sequence[Measurement]) -> Row:
    """Return the row of medians over ``runs``; a row with no runs reports a failure."""
    if not runs:
        return Row(workload, size, library, 0, unit=unit, note="failed: see the runner's output")
    seconds = statistics.median(run.seconds for run in runs)
    peak = int(statistics.median(run.peak_bytes for run in runs))
    return Row(workload, size, library, len(runs), seconds, peak, unit)


# Keys of a module's row that give a throughput directly, and its unit.
RATE_KEYS = {"results_per_s": "results/s", "gb_s": "GB/s"}
# Keys the table shows in columns of their own; any other value goes to the note.
SHOWN_KEYS = {"workload", "library", "items", "seconds", "wall_s", "unit", "runs", "peak_memory", "note", "ratio"}


def external_row(module: str, row: dict[str, Any]) -> Row:
    """Turn a row returned by a workload module's ``rows`` function into a table row.

    The row gives ``items`` and ``seconds``, or ``wall_s`` and one of the
    rates in ``RATE_KEYS``; see the package docstring.
    """
    rate_key = next((key for key in RATE_KEYS if row.get(key) is not None), None)
    seconds = row.get("seconds", row.get("wall_s"))
    peak = row.get("peak_memory")
    extra = [f"{key} {value:.3g}" for key, value in row.items()
             if key not in SHOWN_KEYS and key not in RATE_KEYS and isinstance(value, int | float)]
    return Row(
        workload=f"{module}: {row['workload']}",
        size=int(row.get("items", 0)),
        library=str(row["library"]),
        runs=int(row.get("runs", 0)),
        seconds=None if seconds is None else float(seconds),
        peak_bytes=None if peak is None else int(peak),
        unit=RATE_KEYS[rate_key] if rate_key else str(row.get("unit", "items/s")),
        note="; ".join([str(row.get("note", "")), *extra]).strip("; "),
        rate=None if rate_key is None else float(row[rate_key]),
    )


def add_ratios(rows: list[Row]) -> None:
    """Set each row's ratio: the throughput of its group's first row divided by its own.

    A group is one workload at one size, so above 1 the first row (syncagg
    in every workload of this package) is faster than this row.
    """
    first: dict[tuple[str, int], Row] = {}
    for row in rows:
        reference = first.setdefault((row.workload, row.size), row)
        if reference.throughput is not None and row.throughput is not None:
            row.ratio = reference.throughput / row.throughput


@dataclass(frozen=True)
class Growth:
    """One variant's peak memory at a workload's two sizes."""

    workload: str
    library: str
    small: Row
    large: Row

    @property
    def spread(self) -> float | None:
        """The large size's peak over the small size's, minus one."""
        if not self.small.peak_bytes or self.large.peak_bytes is None:
            return None
        return self.large.peak_bytes / self.small.peak_bytes - 1

    @property
    def bytes_per_result(self) -> float | None:
        """Extra peak memory per extra result between the two sizes."""
        if self.small.peak_bytes is None or self.large.peak_bytes is None:
            return None
        return (self.large.peak_bytes - self.small.peak_bytes) / (self.large.size - self.small.size)


def growths(rows: Iterable[Row]) -> list[Growth]:
    """Pair the rows of each variant measured at two sizes."""
    by_variant: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        by_variant.setdefault((row.workload, row.library), []).append(row)
    pairs = []
    for (workload, library), found in by_variant.items():
        if len(found) == 2:
            small, large = sorted(found, key=lambda row: row.size)
            pairs.append(Growth(workload, library, small, large))
    return pairs


def memory_targets(pairs: Iterable[Growth]) -> list[str]:
    """State, for each streaming strategy, whether its peak memory met the targets."""
    lines = []
    for pair in pairs:
        if pair.workload != "memory" or pair.library not in STREAMING:
            continue
        spread, peak = pair.spread, pair.large.peak_bytes
        if spread is None or peak is None:
            lines.append(f"{pair.library}: not measured (a run failed).")
            continue
        flat = "met" if abs(spread) <= MAX_PEAK_SPREAD else "NOT met"
        low = "met" if peak <= MAX_PEAK_BYTES else "NOT met"
        lines.append(
            f"{pair.library}: peak {mib(pair.small.peak_bytes)} at {pair.small.size:,} results and "
            f"{mib(peak)} at {pair.large.size:,}, {spread:+.1%} apart "
            f"(target within {MAX_PEAK_SPREAD:.0%}: {flat}; target under {mib(MAX_PEAK_BYTES)}: {low})."
        )
    return lines


def list_growth(pairs: Iterable[Growth]) -> list[str]:
    """State how much memory each list-collecting peer adds per result."""
    lines = []
    for pair in pairs:
        per_result = pair.bytes_per_result
        if pair.workload == "memory" and "list" in pair.library and per_result is not None:
            lines.append(f"{pair.library}: {per_result:,.0f} bytes more peak memory per extra result.")
    return lines


def checkpoint_targets(rows: Iterable[Row]) -> list[str]:
    """State whether default checkpoints kept throughput within 5% of no checkpoints."""
    lines = []
    for workload, files in (("checkpoints", "with the Parquet output"), ("checkpoints_no_output", "with no output")):
        found = {row.library: row for row in rows if row.workload == workload}
        on, off = found.get("syncagg, default checkpoints"), found.get("syncagg, no checkpoint")
        if on is None or off is None or on.throughput is None or off.throughput is None:
            continue
        share = on.throughput / off.throughput
        verdict = "met" if share >= MIN_CHECKPOINT_SHARE else "NOT met"
        lines.append(
            f"Checkpoints at the default interval, {files}: {share:.1%} of the throughput without a "
            f"checkpoint over {on.size:,} results (target at least {MIN_CHECKPOINT_SHARE:.0%}: {verdict})."
        )
    if len(lines) == 2:
        lines.append(
            "The two checkpoint workloads differ only in the Parquet output, so their difference is the "
            "output's share of a checkpoint. At each checkpoint the Parquet output closes and fsyncs an "
            "Arrow IPC part file that keeps its rows for a resume, and a run without a checkpoint writes "
            "no part files."
        )
    return lines


def count(value: int) -> str:
    """Format a result count; 0 means a module reported none."""
    return f"{value:,}" if value > 0 else "n/a"


def rate(value: float | None) -> str:
    """Format a throughput: whole numbers when large, three significant digits when small."""
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def mib(size: int | None) -> str:
    return "n/a" if size is None else f"{size / MiB:,.1f} MiB"
