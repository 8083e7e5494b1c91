"""Normalizing result values: numpy scalars, datetimes and NaN.

``Pipeline.normalize`` turns values into plain Python data that every
output writes the same way. It walks dicts, lists and tuples; numpy arrays
are left as they are, because the outputs write them natively.
"""

from __future__ import annotations

import datetime
import math
import sys
from typing import Any

from syncagg.schema import SchemaMismatch

__all__ = ["DATETIME_POLICIES", "NAN_POLICIES", "NaNRejected", "Normalizer"]

NAN_POLICIES = ("keep", "null", "dead_letter")
DATETIME_POLICIES = ("keep", "utc", "iso")


class NaNRejected(SchemaMismatch):
    """A value contains NaN under the ``nan="dead_letter"`` policy."""


class Normalizer:
    """Convert one value to plain Python data.

    Parameters
    ----------
    numpy : bool, default True
        Turn numpy scalars into the Python value they hold (``numpy.int64``
        into ``int``, ``numpy.datetime64`` into ``datetime``, truncated to
        microseconds, which is the resolution of ``datetime``).
    datetimes : {"keep", "utc", "iso"}, default "keep"
        ``"utc"`` converts aware datetimes to UTC and takes naive ones as
        UTC; ``"iso"`` does the same, then writes ISO 8601 text. Dates
        without a time are kept, or written as ISO text with ``"iso"``.
    nan : {"keep", "null", "dead_letter"}, default "keep"
        What a float NaN (or numpy NaT) becomes: kept, ``None``, or a reason
        to make the whole result a dead letter.

    Examples
    --------
    >>> normalize = Normalizer(nan="null", datetimes="iso")
    >>> normalize({"x": float("nan"), "at": datetime.datetime(2024, 5, 1, 12, 0)})
    {'x': None, 'at': '2024-05-01T12:00:00+00:00'}
    """

    def __init__(self, numpy: bool = True, datetimes: str = "keep", nan: str = "keep") -> None:
        if datetimes not in DATETIME_POLICIES:
            raise ValueError(f"normalize(datetimes=...) must be one of {DATETIME_POLICIES}, got {datetimes!r}")
        if nan not in NAN_POLICIES:
            raise ValueError(f"normalize(nan=...) must be one of {NAN_POLICIES}, got {nan!r}")
        self.numpy = bool(numpy)
        self.datetimes = datetimes
        self.nan = nan

    def __call__(self, value: Any) -> Any:
        return self._convert(value, "")

    def describe(self) -> str:
        """Return the settings as text."""
        return f"numpy={self.numpy}, datetimes={self.datetimes!r}, nan={self.nan!r}"

    def _convert(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {key: self._convert(item, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            items = [self._convert(item, f"{path}[{i}]") for i, item in enumerate(value)]
            return items if isinstance(value, list) else tuple(items)
        if self.numpy and _is_numpy_scalar(value):
            value = _numpy_to_python(value)
        if (isinstance(value, float) and math.isnan(value)) or _is_nat(value):
            return self._nan(value, path)
        if isinstance(value, datetime.date):
            return self._datetime(value)
        return value

    def _nan(self, value: Any, path: str) -> Any:
        if self.nan == "null":
            return None
        if self.nan == "dead_letter":
            where = f"field {path!r}" if path else "the value"
            raise NaNRejected(f"{where} is NaN; fix the function or pick nan='null'")
        return value

    def _datetime(self, value: datetime.date) -> Any:
        if self.datetimes == "keep":
            return value
        if isinstance(value, datetime.datetime):
            aware = value.tzinfo is not None
            value = value.astimezone(datetime.UTC) if aware else value.replace(tzinfo=datetime.UTC)
        return value.isoformat() if self.datetimes == "iso" else value


def _is_numpy_scalar(value: Any) -> bool:
    # Only a process that imported numpy can hold numpy values, so numpy is
    # never imported here.
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.generic)


def _numpy_to_python(value: Any) -> Any:
    numpy = sys.modules["numpy"]
    if isinstance(value, numpy.datetime64):
        if numpy.isnat(value):
            return value
        # .item() of a nanosecond datetime64 returns an int, so go through microseconds.
        return value.astype("datetime64[us]").item()
    return value.item()


def _is_nat(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.datetime64) and bool(numpy.isnat(value))
