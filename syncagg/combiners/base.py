"""The combiner interface and the field pickers that the built-in combiners share."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any

from syncagg.names import qualified_name

__all__ = ["Combiner", "FieldGetter", "FieldSpec", "describe_field", "is_nan", "make_picker"]

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
        f"{parameter} must be a field name, a function or None, got {field!r} of type {type(field).__qualname__}"
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

    A combiner whose accumulator contains values themselves, not numbers or
    copies computed from them, sets the class attribute ``keeps_values``,
    so that ``Combine`` hands it values that own their memory.

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

    keeps_values = False

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


def is_nan(value: Any) -> bool:
    """Return whether a value is a NaN number; strings, ints and other types are not."""
    kind = type(value)
    if kind is float:
        return value != value  # type: ignore[no-any-return]
    if kind is int or kind is str:
        return False
    return isinstance(value, Real) and math.isnan(value)
