"""Exact sums of ints and floats, so a total does not depend on the order of adding.

Float addition rounds at every step, so a sum computed in parts on several
workers and merged in arrival order would differ in its last bits from run to
run. A finite double is ``numerator / 2**k`` with ``k <= 1074``, so the exact
sum of any doubles is an integer count of ``2**-1074``. ``ExactSum`` keeps the
numerators summed per power of two, which costs a dict lookup and a small-int
addition per value, and rounds once, when the total is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

__all__ = ["ExactSum"]

# The smallest positive double (a subnormal) is 2**-1074.
_SCALE_BITS = 1074


@dataclass
class ExactSum:
    """An exact running total of ints and floats.

    Integers add exactly as Python ints. Floats add exactly as multiples of
    ``2**-1074``, and ``total()`` rounds the sum to the nearest float once.
    Infinities and NaN are summed apart, with IEEE rules: ``inf + -inf`` is
    NaN.

    Examples
    --------
    >>> total = ExactSum()
    >>> for value in (0.1, 0.2, -0.3, 1e100, -1e100):
    ...     total.add(value)
    >>> total.total()
    2.7755575615628914e-17
    """

    integers: int = 0
    numerators: dict[int, int] = field(default_factory=dict)
    floats: bool = False
    special: float | None = None

    def add(self, value: Any) -> None:
        """Add one number, or raise ``TypeError`` for anything else.

        Bools count as 0 and 1, numpy scalars as the Python number they hold.
        """
        kind = type(value)
        if kind is not float and kind is not int:
            value = _as_number(value)
            kind = type(value)
        if kind is int:
            self.integers += value
            return

        self.floats = True
        if value - value != 0.0:
            # Only inf and NaN give a nonzero (NaN) difference.
            self.special = value if self.special is None else self.special + value
            return
        numerator, denominator = value.as_integer_ratio()
        numerators = self.numerators
        numerators[denominator] = numerators.get(denominator, 0) + numerator

    def merge(self, other: ExactSum) -> None:
        """Add another running total into this one."""
        self.integers += other.integers
        numerators = self.numerators
        for denominator, numerator in other.numerators.items():
            numerators[denominator] = numerators.get(denominator, 0) + numerator
        self.floats = self.floats or other.floats
        if other.special is not None:
            self.special = other.special if self.special is None else self.special + other.special

    def total(self) -> int | float:
        """Return the sum: an int when only ints were added, else the nearest float."""
        if not self.floats:
            return self.integers
        if self.special is not None:
            return self.special
        return _round_scaled(self._scaled())

    def divide(self, count: int) -> float:
        """Return the total divided by ``count``, rounded once to the nearest float."""
        if self.special is not None:
            return self.special / count
        return _round_scaled(self._scaled(), count)

    def _scaled(self) -> int:
        """Return the exact sum as a count of ``2**-1074``."""
        exact = self.integers << _SCALE_BITS
        for denominator, numerator in self.numerators.items():
            # denominator is 2**k with k <= 1074, and 2**1074 / 2**k == 1 << (1074 - k).
            exact += numerator << (_SCALE_BITS + 1 - denominator.bit_length())
        return exact


def _as_number(value: Any) -> int | float:
    """Convert a bool, a numpy scalar or another real number to int or float."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        # A numpy scalar, numpy.bool_ included, which is not a numbers.Real.
        value = value.item()
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    raise TypeError(
        f"cannot sum {value!r} of type {type(value).__qualname__}; "
        "sum ints or floats, or pick a numeric field with field=..."
    )


def _round_scaled(exact: int, divisor: int = 1) -> float:
    """Return ``exact * 2**-1074 / divisor`` rounded to the nearest float, or +-inf."""
    try:
        # int / int is correctly rounded in CPython, however large the ints.
        return exact / (divisor << _SCALE_BITS)
    except OverflowError:
        return math.inf if exact > 0 else -math.inf
