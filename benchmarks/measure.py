"""Run a measurement in a child process and sample the memory of its process tree.

Memory is the proportional set size (PSS) summed over the child and all
its descendants, read with psutil every ``SAMPLE_SECONDS`` by a thread of
this process. PSS charges a page shared by n processes 1/n to each, so
pages that forked workers share with their parent are counted once. A sum
of resident set sizes would count them once per worker. A peak shorter
than the sampling interval can be missed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

SAMPLE_SECONDS = 0.05
REPO = Path(__file__).resolve().parent.parent
# A child still running after this is killed and its run reported as failed.
TIMEOUT_SECONDS = 1800.0


@dataclass(frozen=True)
class Measurement:
    """One run of one variant: wall seconds and memory above the child's baseline."""

    seconds: float
    baseline_bytes: int
    peak_bytes: int


class MeasurementError(RuntimeError):
    """A child process failed; the message contains its standard error."""


def tree_pss(pid: int) -> int:
    """Return the PSS in bytes of ``pid`` and its descendants; 0 once it is gone."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            # A worker that exits between the listing and the read has no memory left to count.
            continue
    return total


class PeakSampler:
    """Sample the PSS of a process tree in a thread and keep the maximum."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.sample, name="benchmarks-memory", daemon=True)

    def sample(self) -> None:
        while not self.stopped.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, tree_pss(self.pid))

    def __enter__(self) -> PeakSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def child_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.child", *args]


def run_case(workload: str, library: str, size: int) -> Measurement:
    """Run one variant once in a fresh interpreter and measure it.

    Raises
    ------
    MeasurementError
        The child exited without a result; the message contains its standard error.
    """
    with tempfile.TemporaryDirectory(prefix="syncagg-bench-") as workdir, tempfile.TemporaryFile("w+") as errors:
        command = child_command("case", workload, library, str(size), workdir)
        with subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
        ) as child:
            assert child.stdin is not None and child.stdout is not None
            watchdog = threading.Timer(TIMEOUT_SECONDS, child.kill)
            watchdog.start()
            started = child.stdout.readline().strip() == "ready"
            baseline = tree_pss(child.pid)
            with PeakSampler(child.pid) as sampler:
                if started:
                    child.stdin.write("go\n")
                    child.stdin.flush()
                result = child.stdout.readline()
            child.wait()
            watchdog.cancel()
        if not started or child.returncode != 0 or not result:
            errors.seek(0)
            raise MeasurementError(f"{workload} on {library} at {size} failed:\n{errors.read()[-4000:]}")
    seconds = float(json.loads(result)["seconds"])
    return Measurement(seconds, baseline, max(sampler.peak - baseline, 0))


def run_module(name: str, mode: str, repeat: int) -> list[dict[str, Any]]:
    """Run a workload module's ``rows`` function in a fresh interpreter and return its rows.

    Raises
    ------
    MeasurementError
        The child failed; the message contains its standard error.
    """
    command = child_command("module", name, mode, str(repeat))
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        raise MeasurementError(f"benchmarks.{name} failed:\n{done.stderr[-4000:]}")
    rows: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows
