"""The PNG of throughput and peak memory per workload, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # Files only: no display, and the same output on every machine.

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from benchmarks.results import MiB, Row, count, rate  # noqa: E402

SYNCAGG_COLOR = "#1f77b4"
PEER_COLOR = "#bbbbbb"


def largest_size(rows: Sequence[Row], workload: str) -> list[Row]:
    """Return the workload's rows at its largest size, where differences show most."""
    own = [row for row in rows if row.workload == workload]
    size = max(row.size for row in own)
    return [row for row in own if row.size == size]


def bars(axes: Axes, rows: Sequence[Row], values: list[float], label: str) -> None:
    names = [row.library for row in rows]
    colors = [SYNCAGG_COLOR if name.startswith("syncagg") else PEER_COLOR for name in names]
    positions = range(len(rows))
    axes.barh(positions, values, color=colors)
    axes.set_yticks(list(positions), names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(label, fontsize=8)
    axes.tick_params(axis="x", labelsize=8)
    # 200k rather than 200000, so the ticks of ten-million-result runs do not overlap.
    axes.xaxis.set_major_formatter(EngFormatter(sep=""))
    for position, value in zip(positions, values, strict=True):
        axes.annotate(rate(value), (value, position), xytext=(3, 0), textcoords="offset points",
                      va="center", fontsize=7)
    axes.margins(x=0.25)


def draw_workload(left: Axes, right: Axes, rows: Sequence[Row]) -> None:
    first = rows[0]
    size = f", {count(first.size)} results" if first.size > 0 else ""
    left.set_title(f"{first.workload}{size}: throughput", fontsize=9, loc="left")
    bars(left, rows, [row.throughput or 0.0 for row in rows], f"{first.unit}, median (higher is better)")
    right.set_title("peak memory above baseline", fontsize=9, loc="left")
    if all(row.peak_bytes is None for row in rows):
        right.text(0.5, 0.5, "not measured", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
        return
    bars(right, rows, [(row.peak_bytes or 0) / MiB for row in rows], "MiB of PSS, median (lower is better)")


def write_plot(rows: Sequence[Row], path: Path) -> None:
    """Draw two panels per workload, throughput and peak memory, into a PNG at ``path``."""
    workloads = list(dict.fromkeys(row.workload for row in rows))
    heights = [max(len(largest_size(rows, name)), 2) * 0.35 + 0.9 for name in workloads]
    figure, axes = plt.subplots(
        len(workloads), 2, figsize=(12, sum(heights)), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for row_axes, name in zip(axes, workloads, strict=True):
        draw_workload(row_axes[0], row_axes[1], largest_size(rows, name))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
