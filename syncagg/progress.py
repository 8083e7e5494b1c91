"""The progress display: a tqdm bar on a terminal, periodic log lines elsewhere.

Both show jobs done out of the total, the rate, the estimated time left,
the failures and the parent's resident memory. When standard error is not a
terminal (a log file, a CI job, a pipe), a bar would write thousands of
carriage-return updates, so the display becomes one INFO line on the
``syncagg`` logger every ``interval`` seconds instead.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import psutil

# tqdm.auto would import asyncio through tqdm.asyncio; syncagg stays free of it.
from tqdm.std import tqdm

from syncagg.memory import PeakMemory, format_bytes

__all__ = ["PeakMemory", "Progress"]

logger = logging.getLogger("syncagg")

# The bar's memory figure is read at most this often, because a redraw that
# only changes it is not worth more.
_MEMORY_REFRESH_SECONDS = 1.0


class Progress:
    """Show the progress of one run; silent if disabled.

    Parameters
    ----------
    enabled : bool
        Show anything at all.
    total : int or None
        Jobs in the run, earlier runs included; ``None`` if unknown.
    initial : int
        Jobs that earlier runs of the same checkpoint finished.
    failed : int
        Failed jobs among ``initial``.
    interval : float, default 10.0
        Seconds between two log lines when ``stream`` is not a terminal.
    stream : file, optional
        Where the bar goes; standard error by default.
    """

    def __init__(
        self,
        enabled: bool,
        total: int | None,
        initial: int,
        failed: int,
        interval: float = 10.0,
        stream: TextIO | None = None,
    ) -> None:
        stream = stream if stream is not None else sys.stderr
        self.total = total
        self.done = initial
        self.failed = failed
        self._initial = initial
        self._interval = interval
        self._process = psutil.Process()
        self._started = time.monotonic()
        self._last_shown = self._started
        self._log = enabled and not _is_terminal(stream)
        self._bar: tqdm | None = None
        if enabled and not self._log:
            self._bar = tqdm(
                total=total,
                initial=initial,
                unit="job",
                dynamic_ncols=True,
                desc="syncagg",
                file=stream,
            )
            self._show_postfix(refresh=False)

    def advance(self, jobs: int, failed: int) -> None:
        """Count finished jobs, of which ``failed`` failed."""
        self.done += jobs
        changed = failed > 0
        self.failed += failed
        if self._bar is None:
            self.tick()
            return

        if changed:
            self._show_postfix(refresh=False)
        self._bar.update(jobs)

    def tick(self) -> None:
        """Refresh the memory figure, or write a log line once ``interval`` has passed."""
        now = time.monotonic()
        if self._bar is not None and now - self._last_shown >= _MEMORY_REFRESH_SECONDS:
            self._show_postfix(refresh=True)
        elif self._log and now - self._last_shown >= self._interval:
            self._last_shown = now
            logger.info("progress: %s", self.describe())

    def describe(self) -> str:
        """Return one line of text with the done jobs, rate, time left, failures and memory."""
        elapsed = time.monotonic() - self._started
        run_jobs = self.done - self._initial
        rate = run_jobs / elapsed if elapsed > 0 else 0.0

        if self.total is None:
            parts = [f"{self.done} jobs done"]
        else:
            share = 100.0 * self.done / self.total if self.total else 100.0
            parts = [f"{self.done}/{self.total} jobs done ({share:.1f}%)"]
        parts.append(f"{self.failed} failed")
        parts.append(f"{rate:.1f} jobs/s")
        if self.total is not None and rate > 0:
            left = max(self.total - self.done, 0) / rate
            parts.append(f"ETA {tqdm.format_interval(left)}")
        parts.append(f"parent memory {format_bytes(self._memory())}")
        return ", ".join(parts)

    def close(self) -> None:
        """Draw the final state and release the terminal line, or write the last log line."""
        if self._bar is not None:
            self._show_postfix(refresh=False)
            self._bar.close()
        elif self._log:
            logger.info("progress: %s", self.describe())

    def _show_postfix(self, refresh: bool) -> None:
        assert self._bar is not None
        self._last_shown = time.monotonic()
        self._bar.set_postfix(
            failed=self.failed, mem=format_bytes(self._memory()), refresh=refresh
        )

    def _memory(self) -> int:
        return int(self._process.memory_info().rss)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        # A closed or replaced stream is no terminal.
        return False
