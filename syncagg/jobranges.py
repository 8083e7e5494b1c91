"""A compact set of job ids, stored as sorted disjoint ranges."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

__all__ = ["JobRanges"]


class JobRanges:
    """Set of non-negative job ids stored as sorted, disjoint, half-open ranges.

    Results arrive out of order, but only by about the number of jobs in
    flight, so the ranges stay few: ten million done jobs with a few hundred
    gaps cost a few hundred pairs of integers, whatever the gaps' widths.

    >>> done = JobRanges()
    >>> done.update([0, 1, 2, 5, 6, 9])
    >>> done.to_ranges()
    [(0, 3), (5, 7), (9, 10)]
    >>> 6 in done, 7 in done
    (True, False)
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        self._count = 0

    def add_range(self, start: int, stop: int) -> None:
        """Add the ids ``start`` to ``stop - 1``."""
        if stop <= start:
            return
        starts, stops = self._starts, self._stops

        # Every range that overlaps or touches [start, stop) merges into one.
        first = bisect_left(stops, start)
        last = bisect_right(starts, stop)
        if first < last:
            start = min(start, starts[first])
            stop = max(stop, stops[last - 1])
            self._count -= sum(stops[i] - starts[i] for i in range(first, last))
        starts[first:last] = [start]
        stops[first:last] = [stop]
        self._count += stop - start

    def add(self, job_id: int) -> None:
        """Add one id."""
        self.add_range(job_id, job_id + 1)

    def update(self, job_ids: Iterable[int]) -> None:
        """Add many ids; runs of consecutive ids cost one range update each."""
        run_start = run_stop = -1
        for job_id in job_ids:
            if job_id == run_stop:
                run_stop += 1
                continue
            if run_start >= 0:
                self.add_range(run_start, run_stop)
            run_start, run_stop = job_id, job_id + 1
        if run_start >= 0:
            self.add_range(run_start, run_stop)

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, int):
            return False
        i = bisect_right(self._starts, job_id) - 1
        return i >= 0 and job_id < self._stops[i]

    def __len__(self) -> int:
        return self._count

    @property
    def end(self) -> int:
        """One past the largest id, 0 when empty."""
        return self._stops[-1] if self._stops else 0

    def to_ranges(self) -> list[tuple[int, int]]:
        """Return the ids as sorted half-open ``(start, stop)`` ranges."""
        return list(zip(self._starts, self._stops, strict=True))

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int]]) -> JobRanges:
        """Build the set from ``(start, stop)`` ranges as ``to_ranges`` returns them."""
        done = cls()
        for start, stop in ranges:
            done.add_range(int(start), int(stop))
        return done
