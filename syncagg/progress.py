"""The progress display: a tqdm bar on a terminal, periodic log lines elsewhere.

Both show jobs done out of the total, the rate, the estimated time left,
the failures and the parent's resident memory. When standard error is not a
terminal (a log file, a CI job, a pipe), a bar would write thousands of
carriage-return updates, so the display becomes one INFO line on the
``syncagg`` logger every ``interval`` seconds instead.

While a bar is shown, log lines that would go to the terminal go through
``tqdm.write``, which clears the bar, writes the line and draws the bar
again below it (``BarLogging``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, TextIO, TypeGuard

import psutil

# tqdm.auto would import asyncio through tqdm.asyncio; syncagg stays free of it.
from tqdm.std import tqdm

from syncagg.memory import PeakMemory, format_bytes

__all__ = ["LOG_DATE_FORMAT", "LOG_FORMAT", "PeakMemory", "Progress"]

logger = logging.getLogger("syncagg")

# The format of the syncagg command's log lines, and of the lines that a
# bar writes in place of Python's last-resort handler.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"

# The bar's memory figure is read at most this often, because a redraw that
# only changes it is not worth more.
_MEMORY_REFRESH_SECONDS = 1.0
# A new failure count is drawn at once, unless the last one was drawn less
# than this long ago. Then the next tick draws it, which bounds the redraws
# when every batch brings failures.
_FAILURE_REFRESH_SECONDS = 0.1


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
        self._failures_pending = False
        self._failures_shown_at = float("-inf")
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
            BAR_LOGGING.start(stream)

    def advance(self, jobs: int, failed: int) -> None:
        """Count finished jobs, of which ``failed`` failed."""
        self.done += jobs
        self.failed += failed
        if self._bar is None:
            self.tick()
            return

        if failed > 0:
            self._show_postfix(refresh=False)
            self._failures_pending = True
        self._bar.update(jobs)
        if self._failures_pending:
            self._show_failures()

    def tick(self) -> None:
        """Refresh the bar's figures, or write a log line once ``interval`` has passed."""
        now = time.monotonic()
        if self._bar is not None and self._failures_pending:
            self._show_failures()
        elif self._bar is not None and now - self._last_shown >= _MEMORY_REFRESH_SECONDS:
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
            self._bar = None
            BAR_LOGGING.stop()
        elif self._log:
            logger.info("progress: %s", self.describe())

    def _show_failures(self) -> None:
        """Draw a new failure count at once, or leave it to a later tick if one was just drawn."""
        assert self._bar is not None
        now = time.monotonic()
        if now - self._failures_shown_at >= _FAILURE_REFRESH_SECONDS:
            self._failures_shown_at = now
            self._failures_pending = False
            self._bar.refresh()

    def _show_postfix(self, refresh: bool) -> None:
        assert self._bar is not None
        self._last_shown = time.monotonic()
        self._bar.set_postfix(
            failed=self.failed, mem=format_bytes(self._memory()), refresh=refresh
        )

    def _memory(self) -> int:
        return int(self._process.memory_info().rss)


class BarLogging:
    """Send the log lines meant for the terminal through ``tqdm.write`` while bars are shown.

    A console handler is a ``StreamHandler`` on standard output, standard
    error or the bar's stream. The first bar to start swaps the stream of
    each console handler of the ``syncagg`` logger and its ancestors for a
    ``_BarStream``, so the handler keeps its format, level and filters.
    With no handler at all, Python's last-resort handler would print
    WARNING lines as the bare message. A handler with ``LOG_FORMAT`` and
    the last-resort level takes its place until the last bar stops.

    NOTE: lines that forked workers log still land on the bar's line,
    because ``_BarStream`` writes them directly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bars = 0
        self._swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
        self._stand_in: logging.Handler | None = None

    def start(self, stream: TextIO) -> None:
        """Route console log lines through ``tqdm.write`` for one more bar on ``stream``."""
        with self._lock:
            self._bars += 1
            if self._bars > 1:
                return
            handlers = list(_chain_handlers(logger))
            for handler in handlers:
                if _is_console(handler, stream):
                    original = handler.setStream(_BarStream(handler.stream))
                    self._swapped.append((handler, original))
            if not handlers and logging.lastResort is not None:
                self._stand_in = logging.StreamHandler(_BarStream(stream))
                self._stand_in.setLevel(logging.lastResort.level)
                self._stand_in.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
                logger.addHandler(self._stand_in)

    def stop(self) -> None:
        """Restore the handlers once the last bar has closed."""
        with self._lock:
            self._bars -= 1
            if self._bars > 0:
                return
            for handler, original in self._swapped:
                if isinstance(handler.stream, _BarStream):
                    handler.setStream(original)
            self._swapped.clear()
            if self._stand_in is not None:
                logger.removeHandler(self._stand_in)
                self._stand_in = None


BAR_LOGGING = BarLogging()


class _BarStream:
    """A text stream whose writes go through ``tqdm.write``, above any bar on the same terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pid = os.getpid()

    def write(self, text: str) -> int:
        if os.getpid() != self._pid:
            # A forked worker inherits the handler. tqdm.write takes a
            # multiprocessing lock that forked workers share with the parent
            # (tqdm 4.70), and a worker killed while holding it would block
            # the parent's bar for good.
            return self.stream.write(text)
        tqdm.write(text, file=self.stream, end="")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _chain_handlers(start: logging.Logger) -> list[logging.Handler]:
    """Return the handlers that a record of ``start`` reaches, as ``Logger.callHandlers`` walks them."""
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = start
    while current is not None:
        handlers += current.handlers
        current = current.parent if current.propagate else None
    return handlers


def _is_console(
    handler: logging.Handler, bar_stream: TextIO
) -> TypeGuard[logging.StreamHandler[Any]]:
    if not isinstance(handler, logging.StreamHandler):
        return False
    return handler.stream in (sys.stdout, sys.stderr, bar_stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        # A closed or replaced stream is no terminal.
        return False
