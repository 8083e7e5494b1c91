"""Combiners: aggregations in four steps that can run in parts and merge.

A combiner splits an aggregation into four steps: ``create`` returns an empty
accumulator, ``add`` folds one value into an accumulator, ``merge`` combines
two accumulators, and ``extract`` turns an accumulator into the final value.
Because accumulators merge, values can be folded in any split over workers
and batches and the parts merged in any order. Every built-in combiner then
returns the same value as one sequential fold; ``ArraySum`` of float arrays
is the exception, see there.

Accumulators must pickle, because they travel from the workers with
``Combine(..., in_workers=True)`` and go into checkpoints. ``add`` and
``merge`` may change the accumulator they receive and return it, so an
accumulator is used once: pass the returned one on.
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import heapq
import math
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, NamedTuple

from syncagg.exactsum import ExactSum
from syncagg.names import qualified_name

__all__ = [
    "ArraySum",
    "Combiner",
    "Count",
    "CountDistinct",
    "GroupBy",
    "HistogramCounts",
    "Histogram",
    "Max",
    "Mean",
    "Min",
    "Sum",
    "TopK",
]

# The part of a value to aggregate: a dict key, a function, or None for
# the whole value.
FieldSpec = str | Callable[[Any], Any] | None


class FieldGetter:
    """Return ``value[name]``, or raise a ``KeyError`` that names the field and the value."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, value: Any) -> Any:
        try:
            return value[self.name]
        except (KeyError, TypeError, IndexError):
            text = repr(value)
            if len(text) > 200:
                text = text[:197] + "..."
            raise KeyError(
                f"value {text} has no field {self.name!r}; return dicts with that "
                "key, or pass field=None to aggregate the whole value"
            ) from None


def _identity(value: Any) -> Any:
    return value


def make_picker(field: FieldSpec, parameter: str = "field") -> Callable[[Any], Any]:
    """Return the function that picks a field from a value; raise ``TypeError`` for a bad field."""
    if field is None:
        return _identity
    if isinstance(field, str):
        return FieldGetter(field)
    if callable(field):
        return field
    raise TypeError(
        f"{parameter} must be a field name, a function or None, got {field!r} "
        f"of type {type(field).__qualname__}"
    )


def describe_field(field: FieldSpec) -> str:
    """Return how a field appears in a combiner's description."""
    if field is None or isinstance(field, str):
        return repr(field)
    return qualified_name(field)


class Combiner(abc.ABC):
    """Base class of combiners: ``create``, ``add``, ``merge``, ``extract``.

    Parameters
    ----------
    field : str or callable, optional
        What to aggregate from each value: ``"lines"`` takes ``value["lines"]``
        of dict values, a function takes ``field(value)``. By default the
        whole value. A function must pickle (defined at the top level of a
        module) when the combiner runs in worker processes. A subclass that
        defines ``__init__`` calls ``super().__init__(field)``, which sets
        ``self.pick``.

    Examples
    --------
    A combiner that joins strings in sorted order, so the order of arrival
    does not matter:

    >>> class SortedJoin(Combiner):
    ...     def create(self):
    ...         return []
    ...     def add(self, accumulator, value):
    ...         accumulator.append(self.pick(value))
    ...         return accumulator
    ...     def merge(self, left, right):
    ...         return left + right
    ...     def extract(self, accumulator):
    ...         return "".join(sorted(accumulator))
    >>> SortedJoin().fold(["b", "c", "a"])
    'abc'
    """

    def __init__(self, field: FieldSpec = None) -> None:
        self.field = field
        self.pick = make_picker(field)

    @abc.abstractmethod
    def create(self) -> Any:
        """Return a new, empty accumulator."""

    @abc.abstractmethod
    def add(self, accumulator: Any, value: Any) -> Any:
        """Fold one value into ``accumulator`` and return the accumulator."""

    @abc.abstractmethod
    def merge(self, left: Any, right: Any) -> Any:
        """Return the accumulator of the values of both ``left`` and ``right``."""

    @abc.abstractmethod
    def extract(self, accumulator: Any) -> Any:
        """Return the final value of an accumulator; leaves the accumulator usable."""

    def add_all(self, accumulator: Any, values: Iterable[Any]) -> Any:
        """Fold every value of ``values`` into ``accumulator`` and return it."""
        add = self.add
        for value in values:
            accumulator = add(accumulator, value)
        return accumulator

    def fold(self, values: Iterable[Any]) -> Any:
        """Return the final value of a sequential fold over ``values``."""
        return self.extract(self.add_all(self.create(), values))

    def settings(self) -> list[str]:
        """Return the constructor arguments as text, for ``describe``."""
        return [] if self.field is None else [f"field={describe_field(self.field)}"]

    def describe(self) -> str:
        """Return the combiner and its settings as text; part of a checkpoint's fingerprint."""
        return f"{type(self).__name__}({', '.join(self.settings())})"

    def __repr__(self) -> str:
        return self.describe()


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


def _is_nan(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return value != value  # type: ignore[no-any-return]
    if kind is int or kind is str:
        return False
    return isinstance(value, Real) and math.isnan(value)


class _Extreme(Combiner):
    """Keep the least (``Min``) or greatest (``Max``) value; ``None`` before any."""

    greatest: bool

    def create(self) -> Any:
        return None

    def add(self, accumulator: Any, value: Any) -> Any:
        return self.merge(accumulator, self.pick(value))

    def merge(self, left: Any, right: Any) -> Any:
        if left is None or _is_nan(right):
            return right
        if right is None or _is_nan(left):
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
        f"ArraySum adds numeric arrays, got an array of dtype {dtype}; "
        "return numbers or numeric numpy arrays"
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
        if value is None or _is_nan(value):
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
            raise ValueError(
                f"Histogram edges must increase strictly, got {low!r} then {high!r} "
                f"in {list(values)!r}"
            )
    return values


class _Ranked:
    """A value with its sort key, ordered so that the heap's root is the first to drop.

    Ties on the key are broken by the pickled bytes of the value, computed
    only when a tie occurs, so the values kept do not depend on arrival order.
    """

    __slots__ = ("key", "value", "largest", "_bytes")

    def __init__(self, key: Any, value: Any, largest: bool) -> None:
        self.key = key
        self.value = value
        self.largest = largest
        self._bytes: bytes | None = None

    def __getstate__(self) -> tuple[Any, Any, bool]:
        return (self.key, self.value, self.largest)

    def __setstate__(self, state: tuple[Any, Any, bool]) -> None:
        self.key, self.value, self.largest = state
        self._bytes = None

    def tiebreak(self) -> bytes:
        if self._bytes is None:
            self._bytes = pickle.dumps(self.value, protocol=5)
        return self._bytes

    def __lt__(self, other: _Ranked) -> bool:
        """Return True if ``self`` ranks below ``other``, so that it is dropped first."""
        if self.key == other.key:
            mine, theirs = self.tiebreak(), other.tiebreak()
        else:
            mine, theirs = self.key, other.key
        return bool(mine < theirs) if self.largest else bool(theirs < mine)


class TopK(Combiner):
    """Keep the ``k`` values with the largest (or smallest) key.

    Accepts values of any type; the keys must order with ``<`` and must not
    be NaN. Values with equal keys are ranked by their pickled bytes, so the
    values kept are the same whatever the order of arrival. The result is a
    list of at most ``k`` whole values, best first.

    Parameters
    ----------
    k : int
        How many values to keep, at least 1.
    key : str or callable, optional
        The key to rank by: a field name, a function, or by default the
        value itself.
    largest : bool, default True
        Keep the largest keys; with False the smallest.

    Examples
    --------
    >>> rows = [{"path": "a", "lines": 5}, {"path": "b", "lines": 50}, {"path": "c", "lines": 20}]
    >>> [row["path"] for row in TopK(2, key="lines").fold(rows)]
    ['b', 'c']
    >>> TopK(2, largest=False).fold([5, 3, 9, 1])
    [1, 3]
    """

    def __init__(self, k: int, key: FieldSpec = None, largest: bool = True) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"TopK(k) must be a positive int, got {k!r}")
        super().__init__(None)
        self.k = k
        self.key = key
        self.largest = bool(largest)
        self._key = make_picker(key, "key")

    def create(self) -> list[_Ranked]:
        return []

    def add(self, accumulator: list[_Ranked], value: Any) -> list[_Ranked]:
        self._push(accumulator, _Ranked(self._key(value), value, self.largest))
        return accumulator

    def merge(self, left: list[_Ranked], right: list[_Ranked]) -> list[_Ranked]:
        for entry in right:
            self._push(left, entry)
        return left

    def extract(self, accumulator: list[_Ranked]) -> list[Any]:
        return [entry.value for entry in sorted(accumulator, reverse=True)]

    def settings(self) -> list[str]:
        settings = [str(self.k)]
        if self.key is not None:
            settings.append(f"key={describe_field(self.key)}")
        if not self.largest:
            settings.append("largest=False")
        return settings

    def _push(self, heap: list[_Ranked], entry: _Ranked) -> None:
        if len(heap) < self.k:
            heapq.heappush(heap, entry)
        elif heap[0] < entry:
            heapq.heapreplace(heap, entry)


class CountDistinct(Combiner):
    """Count distinct values exactly, or distinct field values with ``field``.

    Accepts hashable values: numbers, strings, tuples, frozensets. The
    accumulator is the set of values seen, so memory grows with the number
    of distinct values. The result is an int.

    Examples
    --------
    >>> CountDistinct().fold(["a", "b", "a"])
    2
    >>> CountDistinct("package").fold([{"package": "x"}, {"package": "x"}])
    1
    """

    def create(self) -> set[Any]:
        return set()

    def add(self, accumulator: set[Any], value: Any) -> set[Any]:
        picked = self.pick(value)
        try:
            accumulator.add(picked)
        except TypeError:
            raise TypeError(
                f"CountDistinct needs hashable values, got {type(picked).__qualname__}; "
                "pick a hashable field with field=..., or return tuples instead of lists"
            ) from None
        return accumulator

    def merge(self, left: set[Any], right: set[Any]) -> set[Any]:
        if len(left) < len(right):
            left, right = right, left
        left |= right
        return left

    def extract(self, accumulator: set[Any]) -> int:
        return len(accumulator)


class GroupBy(Combiner):
    """Apply a combiner to each group of values with the same key.

    Accepts values from which ``key`` picks a hashable group key; the inner
    combiner receives the whole value. The result is a dict from group key
    to the inner combiner's result, sorted by key when the keys order.

    Parameters
    ----------
    key : str or callable
        The group key: a field name or a function of the value.
    combiner : Combiner
        What to compute for each group.

    Examples
    --------
    >>> rows = [
    ...     {"package": "b", "lines": 5},
    ...     {"package": "a", "lines": 1},
    ...     {"package": "b", "lines": 10},
    ... ]
    >>> GroupBy("package", Sum("lines")).fold(rows)
    {'a': 1, 'b': 15}
    """

    def __init__(self, key: str | Callable[[Any], Any], combiner: Combiner) -> None:
        if key is None:
            raise TypeError("GroupBy(key) must be a field name or a function, got None")
        if not isinstance(combiner, Combiner):
            raise TypeError(
                f"GroupBy(combiner) must be a syncagg combiner such as Sum('lines'), "
                f"got {combiner!r} of type {type(combiner).__qualname__}"
            )
        super().__init__(None)
        self.key = key
        self.combiner = combiner
        self._key = make_picker(key, "GroupBy(key)")

    def create(self) -> dict[Any, Any]:
        return {}

    def add(self, accumulator: dict[Any, Any], value: Any) -> dict[Any, Any]:
        group = self._key(value)
        try:
            inner = accumulator[group]
        except KeyError:
            inner = self.combiner.create()
        except TypeError:
            raise TypeError(
                f"GroupBy needs hashable group keys, got {type(group).__qualname__}; "
                "pick a field that holds a string, a number or a tuple"
            ) from None
        accumulator[group] = self.combiner.add(inner, value)
        return accumulator

    def merge(self, left: dict[Any, Any], right: dict[Any, Any]) -> dict[Any, Any]:
        combiner = self.combiner
        for group, inner in right.items():
            if group in left:
                left[group] = combiner.merge(left[group], inner)
            else:
                left[group] = inner
        return left

    def extract(self, accumulator: dict[Any, Any]) -> dict[Any, Any]:
        groups: Iterable[Any] = accumulator
        # Keys of mixed types, which do not order, keep the order of first arrival.
        with contextlib.suppress(TypeError):
            groups = sorted(accumulator)
        return {group: self.combiner.extract(accumulator[group]) for group in groups}

    def settings(self) -> list[str]:
        return [describe_field(self.key), self.combiner.describe()]
