"""The kinds of value that a declared column accepts: its own kind, never a conversion.

pyarrow's safe cast (checked with pyarrow 26) only checks that a number
keeps its value. It still parses text into numbers and dates (``"12"``
becomes 12), turns ``True`` into 1, drops struct fields that the target
type lacks, and cuts the time off a timestamp cast to a date. A declared
schema is a contract on the
values, so ``kind_problem`` rejects every cast between kinds before the
safe cast runs. Within the numbers, integers may go to float and decimal
columns and floats to integer columns, because the safe cast rejects
every such value that would change.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["kind_of", "kind_problem"]

# The kinds that values of each kind may be cast to, besides their own.
_NUMERIC_TARGETS = {
    "integer": ("float", "decimal"),
    "float": ("integer",),
}


def kind_of(kind: pa.DataType) -> str:
    """Return the kind of values of an Arrow type: "integer", "text", "struct" and so on.

    A type of no listed kind, such as an extension type, is its own kind,
    so it accepts only values of the same type.
    """
    kinds = (
        (pa.types.is_null, "null"),
        (pa.types.is_boolean, "bool"),
        (pa.types.is_integer, "integer"),
        (pa.types.is_floating, "float"),
        (pa.types.is_decimal, "decimal"),
        (_is_text, "text"),
        (_is_binary, "binary"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_date, "date"),
        (pa.types.is_time, "time"),
        (pa.types.is_duration, "duration"),
        (_is_list, "list"),
        (pa.types.is_struct, "struct"),
        (pa.types.is_map, "map"),
    )
    for test, name in kinds:
        if test(kind):
            return name
    return str(kind)


def kind_problem(source: pa.DataType, target: pa.DataType) -> str | None:
    """Return why values of ``source`` must not be cast to ``target``, or ``None``.

    Nested types are compared field by field and item by item.
    """
    if pa.types.is_dictionary(source):
        source = source.value_type
    if pa.types.is_dictionary(target):
        target = target.value_type
    source_kind, target_kind = kind_of(source), kind_of(target)
    if source_kind == "null":
        return None
    if source_kind != target_kind:
        if target_kind in _NUMERIC_TARGETS.get(source_kind, ()):
            return None
        return f"{source} values do not convert to {target}"
    if source_kind == "list":
        return kind_problem(source.value_type, target.value_type)
    if source_kind == "map":
        return kind_problem(source.key_type, target.key_type) or kind_problem(
            source.item_type, target.item_type
        )
    if source_kind == "struct":
        return _struct_problem(source, target)
    return None


def _struct_problem(source: pa.StructType, target: pa.StructType) -> str | None:
    for field in source:
        index = target.get_field_index(field.name)
        if index < 0:
            names = ", ".join(repr(each.name) for each in target)
            return f"the field {field.name!r} is not in the struct, whose fields are {names}"
        problem = kind_problem(field.type, target.field(index).type)
        if problem is not None:
            return f"field {field.name!r}: {problem}"
    return None


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def _is_binary(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or pa.types.is_binary_view(kind)
    )


def _is_list(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_list_view(kind)
        or pa.types.is_large_list_view(kind)
    )
