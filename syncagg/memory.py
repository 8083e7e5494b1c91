"""Memory readings with psutil: the parent's peak, and the run's memory budget.

``PeakMemory`` tracks the resident memory of the parent process alone, for
the run summary and the progress bar. ``MemoryBudget`` measures the parent
together with every child process (the workers) and slows or stops a run
that approaches ``Aggregator(max_memory=...)``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import psutil

from syncagg.errors import SyncaggError

__all__ = [
    "MemoryBudget",
    "MemoryLimitError",
    "PeakMemory",
    "format_bytes",
    "parse_memory",
]

logger = logging.getLogger("syncagg.memory")

# Below this fraction of the budget new jobs go out freely; above it the run
# waits for the jobs in flight before it sends more.
SOFT_FRACTION = 0.9
# A run that stays above the soft limit repeats its warning this often.
_WARN_EVERY_SECONDS = 30.0

_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_ACCEPTED = "a positive int of bytes, or a string such as '512MiB', '4GiB' or '2.5GB' (units B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"


class MemoryLimitError(SyncaggError):
    """Collected results made the run's memory pass ``max_memory``.

    Raised by ``Aggregator.run`` when the strategy is ``Collect``, which keeps
    every value in memory. The message names the budget and the usage, and
    ``usage`` and ``limit`` hold them in bytes, for callers that word the
    advice themselves, such as the command line.
    """

    def __init__(self, message: str, *, usage: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.usage = usage
        self.limit = limit


def parse_memory(value: Any) -> int:
    """Return a memory size in bytes from an int of bytes or a string with a unit.

    Raises
    ------
    ValueError
        If ``value`` is not a positive size; the message lists the accepted forms.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value > 0:
            return value
        raise ValueError(f"max_memory must be {_ACCEPTED}, got {value!r}")

    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"max_memory must be {_ACCEPTED}, got {value!r}")

    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"max_memory must be {_ACCEPTED}, got {value!r}")
    return size


def format_bytes(size: float) -> str:
    """Return a size in bytes as text with a binary unit, such as ``'1.5 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def tree_memory(process: psutil.Process) -> int:
    """Return the memory of ``process`` and all its descendants, in bytes.

    Each process counts its proportional set size (PSS) where the kernel
    reports it. A page shared by ``n`` processes counts ``1/n`` in each, so
    the pages that forked workers share with the parent count once in the
    sum, and so does the shared-memory ring. Without PSS the resident set size (RSS) of
    each process is summed, which counts shared pages once per process and
    so overstates the total.
    """
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += _resident(member)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            # A worker that exits between the listing and the reading uses no memory.
            continue
    return total


def _resident(process: psutil.Process) -> int:
    try:
        return int(process.memory_full_info().pss)
    except (AttributeError, psutil.AccessDenied):
        return int(process.memory_info().rss)


class PeakMemory:
    """Track the peak resident memory of the current process with psutil.

    psutil reports the current resident size only, so the peak is the
    largest of the readings taken; ``sample`` is cheap to call often and
    reads at most every ``interval`` seconds.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._last = 0.0
        self.peak = 0
        self.sample(force=True)

    def sample(self, force: bool = False) -> None:
        """Take a reading if ``interval`` has passed since the last one."""
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        self.peak = max(self.peak, self._process.memory_info().rss)


class MemoryBudget:
    """Hold a run under ``limit`` bytes of memory for the parent and its workers.

    Parameters
    ----------
    limit : int
        The budget in bytes.
    collecting : bool
        Whether the strategy keeps every value in memory (``Collect``). Then
        usage above ``limit`` raises ``MemoryLimitError``, since waiting does
        not free the values the strategy keeps.
    interval : float, default 0.25
        Seconds between two readings; a reading costs about a millisecond
        per process.
    """

    def __init__(self, limit: int, collecting: bool, interval: float = 0.25) -> None:
        self.limit = limit
        self.collecting = collecting
        self.usage = 0
        self.peak = 0
        self.paused = False
        self._process = psutil.Process()
        self._interval = interval
        self._last_reading = float("-inf")
        self._last_warning = float("-inf")

    def allows_dispatch(self, in_flight: int) -> bool:
        """Return whether new jobs may go out now, given the jobs still in flight.

        Above ``SOFT_FRACTION`` of the budget, new jobs wait until the jobs in
        flight have come back, so the writers and the strategy catch up and
        the workers stop holding results. Jobs go out again once usage falls
        below the soft limit, or once nothing is in flight, because waiting
        longer frees nothing more.

        Raises
        ------
        MemoryLimitError
            If ``collecting`` and usage is above the budget.
        """
        self._sample()
        if self.collecting and self.usage > self.limit:
            raise MemoryLimitError(
                self._collect_message(), usage=self.usage, limit=self.limit
            )

        if self.usage < self.limit * SOFT_FRACTION:
            if self.paused:
                logger.info(
                    "memory use %s is below the budget again; sending new jobs",
                    format_bytes(self.usage),
                )
            self.paused = False
            return True

        self._warn()
        self.paused = True
        return in_flight == 0

    def _sample(self) -> None:
        now = time.monotonic()
        if now - self._last_reading < self._interval:
            return
        self._last_reading = now
        self.usage = tree_memory(self._process)
        self.peak = max(self.peak, self.usage)

    def _warn(self) -> None:
        now = time.monotonic()
        if self.paused and now - self._last_warning < _WARN_EVERY_SECONDS:
            return
        self._last_warning = now
        logger.warning(
            "memory use %s of the parent and its workers is above %.0f%% of the budget %s; "
            "new jobs wait until the jobs in flight are collected",
            format_bytes(self.usage),
            SOFT_FRACTION * 100,
            format_bytes(self.limit),
        )

    def _collect_message(self) -> str:
        return (
            f"memory use {format_bytes(self.usage)} ({self.usage} bytes) of the parent and its "
            f"workers passed the budget max_memory={format_bytes(self.limit)} ({self.limit} bytes) "
            "while Collect() keeps every result in memory; use a streaming strategy such as "
            "Reduce, Merge or Stream, or write the results to outputs, or raise max_memory"
        )
