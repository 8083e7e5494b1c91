"""Combiners of numeric arrays and distributions: ArraySum and Histogram."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, NamedTuple

from syncagg.combiners.base import Combiner, FieldSpec, is_nan

__all__ = ["ArraySum", "Histogram", "HistogramCounts"]


class ArraySum(Combiner):
    """Sum numpy arrays of one shape element by element.

    Accepts numpy arrays and what ``numpy.asarray`` turns into a numeric
    array (lists of numbers, scalars). Bool and int arrays are summed as
    int64 (uint64 for unsigned), float arrays as float64 and complex arrays
    as complex128. The result is an array of the common shape, or ``None``
    for no values.

    NOTE: float rounding makes a float64 element sum depend on the order of
    additions, so the last bits of float results can differ between runs.
    Int arrays, and floats that hold whole numbers below 2**53, are exact.

    Examples
    --------
    >>> import numpy as np
    >>> ArraySum().fold([np.array([1, 2]), np.array([10, 20])])
    array([11, 22])
    >>> ArraySum("counts").fold([{"counts": [1, 1]}, {"counts": [0, 2]}])
    array([1, 3])
    """

    def create(self) -> Any:
        return None

    def add(self, accumulator: Any, value: Any) -> Any:
        return self._add_array(accumulator, self.pick(value))

    def merge(self, left: Any, right: Any) -> Any:
        if right is None:
            return left
        return self._add_array(left, right)

    def extract(self, accumulator: Any) -> Any:
        return None if accumulator is None else accumulator.copy()

    def _add_array(self, accumulator: Any, value: Any) -> Any:
        import numpy as np

        array = np.asarray(value)
        wide = _wide_dtype(array.dtype)
        if accumulator is None:
            return array.astype(wide, copy=True)

        if array.shape != accumulator.shape:
            raise ValueError(
                f"cannot add an array of shape {array.shape} to a sum of shape "
                f"{accumulator.shape}; every value summed by ArraySum needs the same shape"
            )
        common = np.result_type(accumulator.dtype, wide)
        if common != accumulator.dtype:
            accumulator = accumulator.astype(common)
        np.add(accumulator, array, out=accumulator)
        return accumulator


def _wide_dtype(dtype: Any) -> Any:
    """Return the 64-bit dtype that sums of ``dtype`` use; raise for a non-numeric one."""
    import numpy as np

    if dtype.kind in "bi":
        return np.dtype(np.int64)
    if dtype.kind == "u":
        return np.dtype(np.uint64)
    if dtype.kind == "f":
        return np.dtype(np.float64)
    if dtype.kind == "c":
        return np.dtype(np.complex128)
    raise TypeError(
        f"ArraySum adds numeric arrays, got an array of dtype {dtype}; return numbers or numeric numpy arrays"
    )


class HistogramCounts(NamedTuple):
    """The result of ``Histogram``.

    Attributes
    ----------
    edges : tuple of float
        The bin edges, as given.
    counts : tuple of int
        Values in each bin: ``edges[i] <= x < edges[i + 1]``, and the last
        bin also contains ``x == edges[-1]``, as in ``numpy.histogram``.
    below, above : int
        Values less than ``edges[0]`` or greater than ``edges[-1]``.
    missing : int
        ``None`` and NaN values, which belong to no bin.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    below: int
    above: int
    missing: int


class Histogram(Combiner):
    """Count numbers in fixed bins.

    Accepts numbers, and arrays or lists of numbers whose elements are
    counted one by one. ``None`` and NaN are counted as missing; values
    outside the edges are counted below or above, so no value is dropped.

    Parameters
    ----------
    edges : sequence of numbers
        At least two bin edges, strictly increasing.
    field : str or callable, optional
        What to count from each value, as for ``Combiner``.

    Examples
    --------
    >>> histogram = Histogram([0, 10, 100], field="lines")
    >>> result = histogram.fold([{"lines": 3}, {"lines": 40}, {"lines": 100}, {"lines": 500}])
    >>> result.counts, result.above
    ((1, 2), 1)
    """

    def __init__(self, edges: Sequence[float], field: FieldSpec = None) -> None:
        super().__init__(field)
        self.edges = _check_edges(edges)
        self._bins = len(self.edges) - 1

    def create(self) -> list[int]:
        # The bin counts, then below, above and missing.
        return [0] * (self._bins + 3)

    def add(self, accumulator: list[int], value: Any) -> list[int]:
        value = self.pick(value)
        if isinstance(value, (int, float)) or value is None:
            accumulator[self._index(value)] += 1
            return accumulator
        return self._add_many(accumulator, value)

    def merge(self, left: list[int], right: list[int]) -> list[int]:
        for i, count in enumerate(right):
            left[i] += count
        return left

    def extract(self, accumulator: list[int]) -> HistogramCounts:
        bins = self._bins
        below, above, missing = accumulator[bins:]
        return HistogramCounts(self.edges, tuple(accumulator[:bins]), below, above, missing)

    def settings(self) -> list[str]:
        return [repr(list(self.edges)), *super().settings()]

    def _index(self, value: Any) -> int:
        """Return the accumulator slot of one number."""
        bins = self._bins
        if value is None or is_nan(value):
            return bins + 2
        position = bisect.bisect_right(self.edges, value)
        if position == 0:
            return bins
        if position <= bins:
            return position - 1
        return bins - 1 if value == self.edges[-1] else bins + 1

    def _add_many(self, accumulator: list[int], values: Any) -> list[int]:
        import numpy as np

        array = np.asarray(values, dtype=np.float64).ravel()
        nan = np.isnan(array)
        array = array[~nan]
        positions = np.searchsorted(self.edges, array, side="right")
        # The last edge closes the last bin, as in numpy.histogram.
        positions[array == self.edges[-1]] = self._bins
        tally = np.bincount(positions, minlength=self._bins + 2)

        accumulator[self._bins] += int(tally[0])
        for i in range(self._bins):
            accumulator[i] += int(tally[i + 1])
        accumulator[self._bins + 1] += int(tally[self._bins + 1])
        accumulator[self._bins + 2] += int(nan.sum())
        return accumulator


def _check_edges(edges: Sequence[float]) -> tuple[float, ...]:
    values = tuple(edges)
    if len(values) < 2:
        raise ValueError(f"Histogram needs at least two edges, got {list(values)!r}")
    for low, high in zip(values, values[1:], strict=False):
        if not low < high:
            raise ValueError(f"Histogram edges must increase strictly, got {low!r} then {high!r} in {list(values)!r}")
    return values
