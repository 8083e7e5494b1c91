"""The progress bar and the parent's memory readings."""

from __future__ import annotations

import time

import psutil
from tqdm.auto import tqdm

__all__ = ["PeakMemory", "Progress"]


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


class Progress:
    """A tqdm bar of done and total jobs with the failure count; silent if disabled."""

    def __init__(self, enabled: bool, total: int | None, initial: int, failed: int) -> None:
        self.failed = failed
        self._bar = tqdm(
            total=total,
            initial=initial,
            unit="job",
            dynamic_ncols=True,
            disable=not enabled,
            desc="syncagg",
        )
        self._shown_failed = -1
        self._show_failed()

    def advance(self, jobs: int, failed: int) -> None:
        """Count finished jobs, of which ``failed`` failed."""
        self.failed += failed
        if self.failed != self._shown_failed:
            self._show_failed()
        self._bar.update(jobs)

    def _show_failed(self) -> None:
        self._shown_failed = self.failed
        self._bar.set_postfix(failed=self.failed, refresh=False)

    def close(self) -> None:
        """Draw the final state and release the terminal line."""
        self._bar.close()
