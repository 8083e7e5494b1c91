"""Encoding an Arrow table as JSON text with pyarrow compute, one column at a time.

Converting a table to Python dicts costs about as much as encoding them
with orjson, so for tables whose columns are all integers, floats, bools,
strings, dates or nulls, this module builds each row's JSON text with
pyarrow's string kernels, which run in C++ without a Python object per
value. ``encode_lines`` returns ``None`` for a table it cannot encode, and
the caller then encodes its rows with orjson.

The text equals orjson's for the same rows except in the exponent of
very large or small floats (pyarrow writes ``1e+20``, orjson ``1e20``),
which every JSON parser reads as the same number.
"""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["encode_lines"]

# Control characters other than \n, \r and \t need \u escapes, which the
# replacements below do not make; a column with one falls back to orjson.
_OTHER_CONTROL = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]"
_NEEDS_ESCAPE = '[\\\\"\\x00-\\x1f]'
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_NON_FINITE_TEXT = {"null": ("null", "null", "null"), "string": ('"NaN"', '"Infinity"', '"-Infinity"')}


def encode_lines(table: Any, nan: str, separator: str = "\n") -> bytes | None:
    """Return the table's rows as JSON objects, each followed by ``separator``, or ``None``."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if table.num_rows == 0 or table.num_columns == 0:
        return None
    pieces: list[Any] = []
    for index, field in enumerate(table.schema):
        fragment = _fragment(table.column(index).combine_chunks(), field.type, nan)
        if fragment is None:
            return None
        name = orjson.dumps(field.name).decode()
        pieces.append(("{" if index == 0 else ",") + name + ":")
        pieces.append(fragment)
    pieces.append("}" + separator)
    lines = pc.binary_join_element_wise(*pieces, "")
    return _concatenated(lines)


def _concatenated(lines: pa.Array) -> bytes:
    """Return the values of a string array back to back, read straight from its data buffer."""
    offsets = lines.buffers()[1]
    first, last = (
        int.from_bytes(offsets[i * 4 : i * 4 + 4], "little", signed=True)
        for i in (lines.offset, lines.offset + len(lines))
    )
    return lines.buffers()[2][first:last].to_pybytes()  # type: ignore[no-any-return]


def _fragment(column: pa.Array, kind: pa.DataType, nan: str) -> pa.Array | None:
    """Return each value's JSON text, or ``None`` for a type this module does not encode."""
    if pa.types.is_null(kind):
        return pa.array(["null"] * len(column), pa.string())
    if pa.types.is_boolean(kind):
        text = pc.if_else(column, "true", "false")
    elif pa.types.is_integer(kind):
        text = pc.cast(column, pa.string())
    elif pa.types.is_floating(kind):
        text = _floats(column, nan)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = _strings(pc.cast(column, pa.string()))
        if text is None:
            return None
    elif pa.types.is_date32(kind):
        text = pc.binary_join_element_wise('"', pc.cast(column, pa.string()), '"', "")
    else:
        return None
    return pc.fill_null(text, "null")


def _floats(column: pa.Array, nan: str) -> pa.Array:
    text = pc.cast(pc.cast(column, pa.float64()), pa.string())
    # pyarrow writes 2.0 as "2", which a reader would take for an integer.
    fraction = pc.or_(pc.match_substring(text, "."), pc.match_substring(text, "e"))
    text = pc.if_else(fraction, text, pc.binary_join_element_wise(text, ".0", ""))
    nan_text, inf_text, minus_inf_text = _NON_FINITE_TEXT[nan]
    infinite = pc.if_else(pc.greater(column, 0), inf_text, minus_inf_text)
    text = pc.if_else(pc.is_inf(column), infinite, text)
    return pc.if_else(pc.is_nan(column), nan_text, text)


def _strings(column: pa.Array) -> pa.Array | None:
    if pc.any(pc.match_substring_regex(column, _NEEDS_ESCAPE)).as_py():
        if pc.any(pc.match_substring_regex(column, _OTHER_CONTROL)).as_py():
            return None
        for plain, escaped in _ESCAPES:
            column = pc.replace_substring(column, plain, escaped)
    return pc.binary_join_element_wise('"', column, '"', "")
