"""Combiners that keep a few values or a set of them: TopK and CountDistinct."""

from __future__ import annotations

import heapq
import pickle
from typing import Any

from syncagg.combiners.base import Combiner, FieldSpec, describe_field, make_picker

__all__ = ["CountDistinct", "TopK"]


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

    keeps_values = True

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

    keeps_values = True

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
