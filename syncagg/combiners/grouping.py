"""GroupBy: one combiner per key."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from syncagg.combiners.base import Combiner, describe_field, make_picker

__all__ = ["GroupBy"]


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
    >>> from syncagg.combiners import Sum
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
        self.keeps_values = combiner.keeps_values

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
