"""Encoding rows as JSON text with orjson, shared by the JSON Lines, JSON and CSV formats.

orjson writes NaN and infinity as ``null``, so its output is always valid
JSON. The ``"string"`` policy replaces them before encoding with the
strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, which costs a walk
over every value, so it is not the default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

from syncagg.outputs.arrowjson import encode_lines
from syncagg.outputs.base import json_default

__all__ = [
    "NAN_POLICIES",
    "check_nan_policy",
    "encode_rows",
    "encode_table",
    "encode_value",
    "replace_non_finite",
    "row_error",
]

NAN_POLICIES = ("null", "string")

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

_NON_FINITE_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

# orjson's message for an int outside -2**63 to 2**64 - 1 (orjson 3).
_ORJSON_INT_RANGE = "Integer exceeds 64-bit range"
_ORJSON_KEY = "Dict key must a type serializable with OPT_NON_STR_KEYS"
_ORJSON_DEPTH = "Recursion limit reached"
_INT_RANGE_FIX = (
    "an integer is outside -2**63 to 2**64 - 1, the range that the JSON encoder "
    "(orjson) writes; return such values as str(value) in the job function"
)


# orjson's messages, and the row error message that replaces each.
_ORJSON_FIXES = {
    _ORJSON_INT_RANGE: _INT_RANGE_FIX,
    _ORJSON_KEY: (
        "a dict in it has a key that is not a str, int, float, bool, None or date, such as a "
        "tuple; JSON keys are strings, so convert such keys with str(key) in the job function"
    ),
    _ORJSON_DEPTH: (
        "it is nested more than 254 levels deep, deeper than orjson writes; flatten it in "
        "the job function"
    ),
}


def check_nan_policy(nan: str) -> str:
    """Return ``nan`` if it is a known policy, else raise ``ValueError``."""
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan must be one of {NAN_POLICIES}, got {nan!r}")
    return nan


def replace_non_finite(value: Any) -> Any:
    """Return ``value`` with every NaN and infinity replaced by its name as a string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE_TEXT[str(value)]
    if isinstance(value, dict):
        return {key: replace_non_finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [replace_non_finite(item) for item in value]
    if type(value).__module__ == "numpy":
        kind = getattr(getattr(value, "dtype", None), "kind", "")
        if kind in ("f", "c", "O"):
            return replace_non_finite(value.tolist())
    return value


def encode_value(value: Any, nan: str, option: int = 0) -> bytes:
    """Encode one value; raise ``TypeError`` with the message of ``json_default``."""
    if nan == "string":
        value = replace_non_finite(value)
    try:
        return orjson.dumps(value, default=json_default, option=OPTIONS | option)
    except orjson.JSONEncodeError as exc:
        # orjson puts its own message on the error and keeps ours as the cause.
        cause = exc.__cause__
        message = str(cause) if isinstance(cause, TypeError) else str(exc)
        raise TypeError(_ORJSON_FIXES.get(message, message)) from None


def row_error(row: Any, nan: str) -> str:
    """Return why ``row`` cannot be encoded, naming the first column that fails."""
    if isinstance(row, dict):
        for key, value in row.items():
            try:
                encode_value(value, nan)
            except TypeError as exc:
                return f"column {key!r}: {exc}"
    try:
        encode_value(row, nan)
    except TypeError as exc:
        return str(exc)
    return "the row cannot be encoded as JSON"


def encode_rows(
    rows: list[Any],
    nan: str,
    reject: Callable[[int, Any, str], None],
) -> list[bytes]:
    """Encode each row; rows that fail go to ``reject(index, row, reason)`` and are left out."""
    if nan == "string":
        rows = [replace_non_finite(row) for row in rows]
    dumps = orjson.dumps
    option = OPTIONS
    try:
        return [dumps(row, default=json_default, option=option) for row in rows]
    except (orjson.JSONEncodeError, TypeError):
        pass

    # Some row fails: encode one at a time to name each failing row.
    encoded = []
    for index, row in enumerate(rows):
        try:
            encoded.append(dumps(row, default=json_default, option=option))
        except (orjson.JSONEncodeError, TypeError):
            reject(index, row, row_error(row, "null"))
    return encoded


def encode_table(table: Any, nan: str, separator: bytes) -> bytes | None:
    """Encode the rows of a pyarrow table, each followed by ``separator``; ``None`` on failure.

    Runs in a worker with ``Aggregator(encode_in_workers=True)``, and in
    the writer. A table that fails here is encoded again row by row by the
    writer, which names the row that fails.
    """
    text = encode_lines(table, nan, separator.decode())
    if text is not None:
        return text
    failed: list[int] = []
    lines = encode_rows(table.to_pylist(), nan, lambda i, row, reason: failed.append(i))
    if failed:
        return None
    return separator.join(lines) + separator if lines else b""
