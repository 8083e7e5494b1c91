"""The Markdown section of docs/benchmarks.md: machine, versions, tables and targets."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks import results
from benchmarks.measure import REPO, SAMPLE_SECONDS
from benchmarks.results import Row

# The section this runner owns; text outside the markers belongs to others.
START = "<!-- benchmarks-runner:start (written by python -m benchmarks; edits inside are overwritten) -->"
END = "<!-- benchmarks-runner:end -->"
RING_NOTE = (
    "syncagg's figures include its shared-memory ring, 64 MiB by default (`ring_size`), split between "
    "the workers. A page of it counts in PSS from the first time it is written, so a run that moves "
    "less than the ring's size shows a lower peak than a longer run of the same job."
)
PACKAGES = ("syncagg", "numpy", "pyarrow", "psutil", "orjson", "mpire", "joblib", "faster-fifo", "matplotlib")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    memory = psutil.virtual_memory().total / 1024**3
    return f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB memory, Linux {platform.release()}"


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def source_version() -> str:
    """Return the commit the benchmarks ran on, and whether syncagg/ or benchmarks/ had local changes."""
    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", "syncagg", "benchmarks")
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown (not a git checkout)"
    return f"commit {commit}" + (", with uncommitted changes in syncagg/ or benchmarks/" if changed else "")


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def method(repeat: int) -> str:
    return (
        f"Each run is a fresh interpreter that imports everything first, then runs one variant with "
        f"2 worker processes (one per core); variants alternate, the order rotating each repetition, and "
        f"every figure is the median of {repeat} runs. Seconds are the wall time of the whole run, pool "
        f"start and shutdown included. Throughput is results (or MiB) over those seconds. The ratio is "
        f"the first row's throughput over this row's, so above 1 the first row is faster. Peak memory is "
        f"the proportional set size (PSS) of the run's process and all its children, summed, sampled every "
        f"{SAMPLE_SECONDS * 1000:.0f} ms, minus the same sum just before the run: the interpreter "
        f"with its imports. PSS counts pages that forked workers share with the parent once."
    )


def format_row(row: Row) -> str:
    seconds = "n/a" if row.seconds is None else f"{row.seconds:.2f}"
    throughput = results.rate(row.throughput)
    ratio = "n/a" if row.ratio is None else f"{row.ratio:.2f}"
    return (
        f"| {row.library} | {results.count(row.size)} | {seconds} | {throughput} {row.unit} | {ratio} "
        f"| {results.mib(row.peak_bytes)} | {row.runs} | {row.note} |"
    )


def workload_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| variant | results | median s | throughput | first row ÷ this | peak memory above baseline | runs | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines.extend(format_row(row) for row in rows)
    return lines


def growth_table(pairs: Sequence[results.Growth]) -> list[str]:
    lines = [
        "| workload | variant | results | peak | results | peak | change | bytes per extra result |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for pair in pairs:
        spread = "n/a" if pair.spread is None else f"{pair.spread:+.1%}"
        per_result = "n/a" if pair.bytes_per_result is None else f"{pair.bytes_per_result:,.0f}"
        lines.append(
            f"| {pair.workload} | {pair.library} | {pair.small.size:,} | {results.mib(pair.small.peak_bytes)} "
            f"| {pair.large.size:,} | {results.mib(pair.large.peak_bytes)} | {spread} | {per_result} |"
        )
    return lines


def heading(workload: str, titles: dict[str, tuple[str, str]]) -> list[str]:
    """Return a workload's heading and the sentence on how it was measured."""
    if workload in titles:
        title, description = titles[workload]
        return [f"### {workload}: {title}", "", description, ""]
    module = workload.split(":", 1)[0]
    return [f"### {workload}", "", f"Rows from `benchmarks/{module}.py`, run in a fresh interpreter; its docstring says how it measures.", ""]


@dataclass(frozen=True)
class Setup:
    """The conditions of a run: the command, the machine and the versions."""

    command: str
    repeat: int
    machine: str
    versions: str
    source: str

    @classmethod
    def current(cls, command: str, repeat: int) -> Setup:
        return cls(command, repeat, machine(), versions(), source_version())


def section(rows: Sequence[Row], titles: dict[str, tuple[str, str]], setup: Setup, plot: str) -> str:
    """Return the whole section, markers included.

    ``titles`` maps a workload's name to its title and a sentence on what it runs.
    """
    pairs = results.growths(rows)
    targets = results.memory_targets(pairs) + results.checkpoint_targets(rows) + results.list_growth(pairs)
    lines = [
        START,
        "## syncagg side by side with its peers",
        "",
        f"Command: `{setup.command}`",
        "",
        f"Machine: {setup.machine}. The machine is shared and noisy, so only ratios measured in one run mean much.",
        "",
        f"Versions: {setup.versions}; syncagg at {setup.source}.",
        "",
        method(setup.repeat),
        "",
        "### Targets",
        "",
        *[f"- {line}" for line in targets or ["No target was measured in this run."]],
        "",
        RING_NOTE,
        "",
    ]
    for workload in dict.fromkeys(row.workload for row in rows):
        lines += [*heading(workload, titles), *workload_table([r for r in rows if r.workload == workload]), ""]
    if pairs:
        lines += ["### Memory at two sizes", "", *growth_table(pairs), ""]
    lines += [f"![Throughput and peak memory per workload]({plot})", "", END]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace this runner's section of ``path``, or append it; other sections stay as they are."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in old and END in old:
        before, rest = old.split(START, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        new = before + text + ("\n" + after if after else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
