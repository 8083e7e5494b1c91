"""Built-in aggregations of ``syncagg run --strategy``, built on the library's combiners.

Every form except ``collect`` is a ``Combine`` over ``Count``, ``Sum``,
``Mean``, ``Min``, ``Max`` or ``GroupBy``. Their results do not depend on
the order in which results arrive: ``Sum`` and ``Mean`` add floats exactly
and round once, so the same input gives the same float in every run.

A field is a key of the dict that the function returns. Without a field,
the aggregation uses the returned value itself. ``None`` values are skipped,
as SQL aggregates skip NULL.

The strategy's description, and with it the checkpoint's fingerprint, is
the ``--strategy`` text itself. So ``syncagg inspect`` shows what the user
typed, and resuming ``sum:size`` with ``sum:lines`` is rejected instead of
mixing two sums.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from syncagg.cli_errors import UsageError
from syncagg.combiners import Count, GroupBy, Max, Mean, Min, Sum
from syncagg.combiners.base import Combiner
from syncagg.strategies import Collect, Combine, Strategy

__all__ = [
    "STRATEGY_FORMS",
    "Aggregation",
    "CommandCollect",
    "CommandStrategy",
    "FieldCombiner",
    "group_key",
    "parse_strategy",
]

STRATEGY_FORMS = (
    "count",
    "sum[:FIELD]",
    "min[:FIELD]",
    "max[:FIELD]",
    "mean[:FIELD]",
    "group:KEY:count",
    "group:KEY:sum|min|max|mean[:FIELD]",
    "collect",
)

# Operation name -> (combiner of the picked values, whether they must be numbers).
_OPERATIONS: dict[str, tuple[type[Combiner], bool]] = {
    "sum": (Sum, True),
    "min": (Min, False),
    "max": (Max, False),
    "mean": (Mean, True),
}


@dataclass(frozen=True)
class Aggregation:
    """The strategy that ``--strategy`` names, with the text it came from."""

    spec: str
    strategy: Strategy

    def result(self) -> Any:
        """Return the strategy's current value, the result printed as JSON."""
        return self.strategy.value()


class CommandStrategy(Combine):
    """A ``Combine`` that describes itself by its ``--strategy`` text, such as ``sum:size``."""

    def __init__(self, spec: str, combiner: Combiner) -> None:
        super().__init__(combiner)
        self.spec = spec

    def describe(self) -> str:
        return self.spec


class CommandCollect(Collect):
    """A ``Collect`` that describes itself as ``collect``, its ``--strategy`` text."""

    def describe(self) -> str:
        return "collect"


class FieldCombiner(Combiner):
    """Apply a combiner to one field of each result, skipping ``None`` values.

    Parameters
    ----------
    combiner : Combiner
        What to compute, such as ``Sum()``; it receives the picked values.
    operation : str
        The operation's name in ``--strategy``, for error messages.
    field : str or None
        The key to pick from each dict result, or ``None`` for the result itself.
    numeric : bool
        Raise ``TypeError`` for a value that is not a number (bools included).
    spec_with_field : str
        The ``--strategy`` form that names a field, such as ``sum:FIELD``,
        which the error for dict results without a field suggests.
    """

    def __init__(
        self,
        combiner: Combiner,
        operation: str,
        field: str | None,
        numeric: bool,
        spec_with_field: str,
    ) -> None:
        super().__init__(None)
        self.combiner = combiner
        self.operation = operation
        self.field_name = field
        self.numeric = numeric
        self.spec_with_field = spec_with_field

    def create(self) -> Any:
        return self.combiner.create()

    def add(self, accumulator: Any, value: Any) -> Any:
        item = self._pick(value)
        if item is None:
            return accumulator
        return self.combiner.add(accumulator, item)

    def merge(self, left: Any, right: Any) -> Any:
        return self.combiner.merge(left, right)

    def extract(self, accumulator: Any) -> Any:
        return self.combiner.extract(accumulator)

    def settings(self) -> list[str]:
        return [self.combiner.describe(), f"field={self.field_name!r}"]

    def _pick(self, value: Any) -> Any:
        if self.field_name is None and isinstance(value, Mapping):
            raise TypeError(_dict_without_field(self.operation, self.spec_with_field, value))

        item = field_value(self.field_name, value)
        if self.numeric and item is not None and not _is_number(item):
            where = "the value" if self.field_name is None else f"field {self.field_name!r}"
            raise TypeError(
                f"{where} is {item!r} of type {type(item).__qualname__}, not an int or a "
                f"float; return numbers to {self.operation}"
            )
        return item


def group_key(key: str, value: Any) -> Any:
    """Return the group key of a result: its ``key`` field, ``None`` included."""
    return field_value(key, value)


def field_value(field: str | None, value: Any) -> Any:
    """Return ``value[field]``, or ``value`` itself when ``field`` is ``None``.

    Raises ``TypeError`` if ``value`` is not a dict and ``ValueError`` if it
    lacks the field. Both messages name the fix to ``--strategy``.
    """
    if field is None:
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"the function returned a {type(value).__qualname__}, which has no field {field!r}; "
            "return a dict, or drop the field from --strategy to use the value itself"
        )
    if field not in value:
        fields = ", ".join(sorted(map(str, value))) or "none"
        raise ValueError(
            f"a result has no field {field!r} (its fields: {fields}); pass a field the function returns"
        )
    return value[field]


def parse_strategy(spec: str) -> Aggregation:
    """Return the aggregation that ``spec`` names, such as ``"sum:size"`` or ``"group:lang:count"``.

    Raises
    ------
    UsageError
        If ``spec`` is not one of ``STRATEGY_FORMS``.
    """
    parts = spec.split(":")
    name = parts[0]
    if spec == "collect":
        return Aggregation(spec, CommandCollect())
    if spec == "count":
        return Aggregation(spec, CommandStrategy(spec, Count()))
    if name in _OPERATIONS and len(parts) <= 2:
        field = _optional_field(parts, 1, spec)
        combiner = _field_combiner(name, field, f"{name}:FIELD")
        return Aggregation(spec, CommandStrategy(spec, combiner))
    if name == "group" and len(parts) >= 3 and parts[1]:
        return Aggregation(spec, CommandStrategy(spec, _grouped(spec, parts)))
    raise _unknown(spec)


def _grouped(spec: str, parts: list[str]) -> GroupBy:
    key, operation = parts[1], parts[2]
    picker: Callable[[Any], Any] = functools.partial(group_key, key)
    if operation == "count" and len(parts) == 3:
        return GroupBy(picker, Count())
    if operation not in _OPERATIONS or len(parts) > 4:
        raise _unknown(spec)

    field = _optional_field(parts, 3, spec)
    inner = _field_combiner(operation, field, f"group:{key}:{operation}:FIELD")
    return GroupBy(picker, inner)


def _field_combiner(operation: str, field: str | None, spec_with_field: str) -> FieldCombiner:
    combiner_type, numeric = _OPERATIONS[operation]
    return FieldCombiner(combiner_type(), operation, field, numeric, spec_with_field)


def _optional_field(parts: list[str], index: int, spec: str) -> str | None:
    if len(parts) <= index:
        return None
    if not parts[index]:
        raise UsageError(
            f"strategy {spec!r} has an empty field name; write the field after the colon, or drop the colon"
        )
    return parts[index]


def _unknown(spec: str) -> UsageError:
    return UsageError(
        f"unknown strategy {spec!r}; use one of {', '.join(STRATEGY_FORMS)}"
    )


def _is_number(item: Any) -> bool:
    # numbers.Real covers int, float, Fraction and numpy scalars, but not
    # Decimal, which the exact sum cannot add.
    return isinstance(item, numbers.Real) and not isinstance(item, bool)


def _dict_without_field(operation: str, spec_with_field: str, value: Mapping[Any, Any]) -> str:
    fields = sorted(map(str, value))
    numeric = sorted(str(key) for key, item in value.items() if _is_number(item))
    example = spec_with_field.replace("FIELD", (numeric or fields or ["FIELD"])[0])
    return (
        f"the results are dicts (fields: {', '.join(fields) or 'none'}), which {operation} "
        f"cannot take whole; name a field with --strategy {spec_with_field}, such as "
        f"--strategy {example}"
    )
