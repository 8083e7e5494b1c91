"""Built-in aggregations of ``syncagg run --strategy``, as ``Reduce`` functions.

Each aggregation is a module-level function bound to its field names with
``functools.partial``, so the strategy's description, and with it the
checkpoint's fingerprint, names the fields: resuming ``sum:size`` with
``sum:lines`` is rejected instead of mixing two sums.

A field is a key of the dict that the function returns. Without a field,
the aggregation uses the returned value itself. ``None`` values are skipped,
as SQL aggregates skip NULL.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from syncagg.cli_errors import UsageError
from syncagg.strategies import Collect, Reduce, Strategy

__all__ = [
    "STRATEGY_FORMS",
    "Aggregation",
    "add_field",
    "count_value",
    "finish_mean",
    "group_by",
    "max_field",
    "mean_field",
    "min_field",
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


@dataclass(frozen=True)
class Aggregation:
    """A strategy from ``--strategy`` and how to turn its value into the result."""

    spec: str
    strategy: Strategy
    finish: Callable[[Any], Any]

    def result(self) -> Any:
        """Return the final result of the strategy's current value."""
        return self.finish(self.strategy.value())


def count_value(total: int, value: Any) -> int:
    """Count one more successful result."""
    return total + 1


def add_field(field: str | None, total: Any, value: Any) -> Any:
    """Add a result's field to the running sum."""
    number = _number(field, value)
    return total if number is None else total + number


def min_field(field: str | None, current: Any, value: Any) -> Any:
    """Keep the smaller of the running minimum and a result's field."""
    item = _field(field, value)
    if item is None:
        return current
    return item if current is None or item < current else current


def max_field(field: str | None, current: Any, value: Any) -> Any:
    """Keep the larger of the running maximum and a result's field."""
    item = _field(field, value)
    if item is None:
        return current
    return item if current is None or item > current else current


def mean_field(field: str | None, state: list[Any], value: Any) -> list[Any]:
    """Add a result's field to ``[sum, count]``; ``finish_mean`` divides them."""
    number = _number(field, value)
    if number is not None:
        state[0] += number
        state[1] += 1
    return state


def finish_mean(state: list[Any]) -> float | None:
    """Return the mean from ``[sum, count]``, or ``None`` when nothing was counted."""
    total, count = state
    return total / count if count else None


# Operation name -> (reduce function of field, state, value; initial state; finish).
_OPERATIONS: dict[str, tuple[Callable[..., Any], Any, Callable[[Any], Any] | None]] = {
    "sum": (add_field, 0, None),
    "min": (min_field, None, None),
    "max": (max_field, None, None),
    "mean": (mean_field, [0, 0], finish_mean),
}


def group_by(
    key: str, operation: str, field: str | None, groups: dict[Any, Any], value: Any
) -> dict[Any, Any]:
    """Apply ``operation`` to the group of the result's ``key`` field."""
    group = _field(key, value, skip_none=False)
    if operation == "count":
        groups[group] = groups.get(group, 0) + 1
        return groups

    function, initial, _ = _OPERATIONS[operation]
    state = groups[group] if group in groups else _fresh(initial)
    groups[group] = function(field, state, value)
    return groups


def parse_strategy(spec: str) -> Aggregation:
    """Return the aggregation that ``spec`` names, such as ``"sum:size"`` or ``"group:lang:count"``.

    Raises
    ------
    UsageError
        If ``spec`` is not one of ``STRATEGY_FORMS``.
    """
    parts = spec.split(":")
    name = parts[0]
    if spec == "count":
        return Aggregation(spec, Reduce(count_value, 0), _same)
    if spec == "collect":
        return Aggregation(spec, Collect(), _same)
    if name in _OPERATIONS and len(parts) <= 2:
        return _simple(spec, name, _optional_field(parts, 1, spec))
    if name == "group" and len(parts) >= 3 and parts[1]:
        return _grouped(
            spec, parts[1], parts[2], _optional_field(parts, 3, spec), len(parts)
        )
    raise _unknown(spec)


def _simple(spec: str, name: str, field: str | None) -> Aggregation:
    function, initial, finish = _OPERATIONS[name]
    return Aggregation(
        spec, Reduce(functools.partial(function, field), initial), finish or _same
    )


def _grouped(
    spec: str, key: str, operation: str, field: str | None, count: int
) -> Aggregation:
    if operation == "count" and count == 3:
        return Aggregation(
            spec, Reduce(functools.partial(group_by, key, "count", None), {}), _same
        )
    if operation not in _OPERATIONS or count > 4:
        raise _unknown(spec)

    finish = _OPERATIONS[operation][2]
    if finish is None:
        return Aggregation(
            spec, Reduce(functools.partial(group_by, key, operation, field), {}), _same
        )
    return Aggregation(
        spec,
        Reduce(functools.partial(group_by, key, operation, field), {}),
        functools.partial(_finish_groups, finish),
    )


def _finish_groups(
    finish: Callable[[Any], Any], groups: dict[Any, Any]
) -> dict[Any, Any]:
    return {group: finish(state) for group, state in groups.items()}


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


def _same(value: Any) -> Any:
    return value


def _fresh(initial: Any) -> Any:
    return list(initial) if isinstance(initial, list) else initial


def _field(field: str | None, value: Any, skip_none: bool = True) -> Any:
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


def _number(field: str | None, value: Any) -> Any:
    item = _field(field, value)
    if item is None or (
        isinstance(item, numbers.Number) and not isinstance(item, bool)
    ):
        return item
    where = "the value" if field is None else f"field {field!r}"
    raise TypeError(
        f"{where} is {item!r} of type {type(item).__qualname__}, not a number; return numbers to sum or average"
    )
