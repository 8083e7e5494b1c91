"""Combiners that reduce values to one number: Count, Sum, Mean, Min and Max."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from syncagg.combiners.base import Combiner, is_nan
from syncagg.exactsum import ExactSum

__all__ = ["Count", "Max", "Mean", "MeanAccumulator", "Min", "Sum"]


class Count(Combiner):
    """Count values, or with ``field`` the values whose field is not ``None``.

    Accepts values of any type. The result is an int, 0 for no values.

    Examples
    --------
    >>> Count().fold(["a", "b", "c"])
    3
    >>> Count("size").fold([{"size": 1}, {"size": None}])
    1
    """

    def create(self) -> int:
        return 0

    def add(self, accumulator: int, value: Any) -> int:
        if self.field is None or self.pick(value) is not None:
            return accumulator + 1
        return accumulator

    def add_all(self, accumulator: int, values: Iterable[Any]) -> int:
        if self.field is None:
            return accumulator + sum(1 for _ in values)
        return super().add_all(accumulator, values)  # type: ignore[no-any-return]

    def merge(self, left: int, right: int) -> int:
        return left + right

    def extract(self, accumulator: int) -> int:
        return accumulator


class Sum(Combiner):
    """Sum numbers exactly, so the total does not depend on the order.

    Accepts ints, floats, bools and numpy scalars. Ints and floats are both
    summed exactly, and a float total is rounded once, at the end. The
    result is therefore the correctly rounded sum (what ``math.fsum``
    returns), however the values were split and merged.

    The result is an int when every value was an int, else a float; 0 for no
    values. A total too large for a float is ``inf``.

    Examples
    --------
    >>> Sum().fold([1, 2, 3])
    6
    >>> Sum("lines").fold([{"lines": 10}, {"lines": 5}])
    15
    >>> Sum().fold([0.1, 0.2, 0.3])
    0.6
    """

    def create(self) -> ExactSum:
        return ExactSum()

    def add(self, accumulator: ExactSum, value: Any) -> ExactSum:
        accumulator.add(self.pick(value))
        return accumulator

    def merge(self, left: ExactSum, right: ExactSum) -> ExactSum:
        left.merge(right)
        return left

    def extract(self, accumulator: ExactSum) -> int | float:
        return accumulator.total()


@dataclass
class MeanAccumulator:
    """The count and the exact sum of the values seen by ``Mean``."""

    count: int
    total: ExactSum


class Mean(Combiner):
    """Return the arithmetic mean of numbers.

    Accepts what ``Sum`` accepts. The sum is exact and divided once, so the
    result is the correctly rounded mean whatever the order. The result is a
    float, or ``None`` for no values.

    Examples
    --------
    >>> Mean().fold([1, 2, 4])
    2.3333333333333335
    >>> Mean("lines").fold([]) is None
    True
    """

    def create(self) -> MeanAccumulator:
        return MeanAccumulator(0, ExactSum())

    def add(self, accumulator: MeanAccumulator, value: Any) -> MeanAccumulator:
        accumulator.total.add(self.pick(value))
        accumulator.count += 1
        return accumulator

    def merge(self, left: MeanAccumulator, right: MeanAccumulator) -> MeanAccumulator:
        left.total.merge(right.total)
        left.count += right.count
        return left

    def extract(self, accumulator: MeanAccumulator) -> float | None:
        if accumulator.count == 0:
            return None
        return accumulator.total.divide(accumulator.count)


class _Extreme(Combiner):
    """Keep the least (``Min``) or greatest (``Max``) value; ``None`` before any."""

    greatest: bool

    def create(self) -> Any:
        return None

    def add(self, accumulator: Any, value: Any) -> Any:
        return self.merge(accumulator, self.pick(value))

    def merge(self, left: Any, right: Any) -> Any:
        if left is None or is_nan(right):
            return right
        if right is None or is_nan(left):
            return left
        # Strict comparison keeps ``left`` on a tie; tied values are equal.
        better = right > left if self.greatest else right < left
        return right if better else left

    def extract(self, accumulator: Any) -> Any:
        return accumulator


class Min(_Extreme):
    """Return the least value, or the least field value with ``field``.

    Accepts values that order with ``<``: numbers, strings, dates, tuples.
    A NaN among numbers makes the result NaN, as in ``numpy.min``. The
    result is ``None`` for no values.

    Examples
    --------
    >>> Min().fold([3, 1, 2])
    1
    >>> Min("name").fold([{"name": "b"}, {"name": "a"}])
    'a'
    """

    greatest = False


class Max(_Extreme):
    """Return the greatest value, or the greatest field value with ``field``.

    Accepts values that order with ``>``: numbers, strings, dates, tuples.
    A NaN among numbers makes the result NaN, as in ``numpy.max``. The
    result is ``None`` for no values.

    Examples
    --------
    >>> Max().fold([3, 1, 2])
    3
    >>> Max("lines").fold([{"lines": 10}, {"lines": 50}])
    50
    """

    greatest = True
