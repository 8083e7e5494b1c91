"""The range of the integers in each column, so that widening keeps every one exactly.

An inferred schema widens an integer column to float64 when a float
arrives, but float64 represents integers exactly only up to 2**53 in
magnitude. The rows written before cannot change any more, so the
converter keeps the minimum and maximum of every integer leaf of every
column (a top-level integer column, or integers inside lists, structs and
maps). It allows a widening only when both still fit the wider type under
a safe cast. Every integer between them fits too, because each integer
type, each float type and each decimal type represents an unbroken range
of integers exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from syncagg.outputs.arrowkinds import kind_of

__all__ = ["IntegerRanges", "Widening"]

# The path of a leaf inside a column: ".name" for a struct field, "[]" for
# list items, "{key}" and "{item}" for map keys and items.
Leaf = tuple[str, ...]


class Widening(Exception):
    """A widening that would change an integer of an earlier row.

    Attributes
    ----------
    column : str
        The top-level column.
    value : int
        The earlier integer that the wider type cannot hold exactly.
    old, new : pyarrow.DataType
        The type of that integer before and after the widening: the
        column's type, or the type of a leaf inside it.
    """

    def __init__(self, column: str, value: int, old: pa.DataType, new: pa.DataType) -> None:
        super().__init__(f"column {column!r} contains {value}, which {new} cannot represent exactly")
        self.column = column
        self.value = value
        self.old = old
        self.new = new


class IntegerRanges:
    """The minimum and maximum integer of each integer leaf of each column written so far."""

    def __init__(self) -> None:
        self._ranges: dict[str, dict[Leaf, tuple[int, int]]] = {}

    def add(self, table: pa.Table) -> None:
        """Widen the ranges by the integers of ``table``."""
        for index, field in enumerate(table.schema):
            for chunk in table.column(index).chunks:
                for leaf, array in _integer_leaves(chunk, ()):
                    self._add_leaf(field.name, leaf, array)

    def _add_leaf(self, column: str, leaf: Leaf, array: pa.Array) -> None:
        if array.null_count == len(array):
            return
        extremes = pc.min_max(array)
        low, high = extremes[0].as_py(), extremes[1].as_py()
        leaves = self._ranges.setdefault(column, {})
        if leaf in leaves:
            known_low, known_high = leaves[leaf]
            low, high = min(low, known_low), max(high, known_high)
        leaves[leaf] = (low, high)

    def check_widening(self, old: pa.Schema, new: pa.Schema) -> None:
        """Raise ``Widening`` if ``new`` cannot hold an integer already written to a column of ``old``."""
        for column, leaves in self._ranges.items():
            old_index, new_index = old.get_field_index(column), new.get_field_index(column)
            if old_index < 0 or new_index < 0:
                continue
            old_type, new_type = old.field(old_index).type, new.field(new_index).type
            if old_type.equals(new_type):
                continue
            for leaf, extremes in leaves.items():
                _check_leaf(column, extremes, _leaf_type(old_type, leaf), _leaf_type(new_type, leaf))

    def state(self) -> dict[str, list[tuple[Leaf, int, int]]]:
        """Return the ranges as small, picklable data for a checkpoint."""
        return {
            column: [(leaf, low, high) for leaf, (low, high) in leaves.items()]
            for column, leaves in self._ranges.items()
        }

    def restore(self, state: dict[str, list[tuple[Leaf, int, int]]]) -> None:
        """Replace the ranges by those that ``state`` returned."""
        self._ranges = {
            column: {tuple(leaf): (int(low), int(high)) for leaf, low, high in leaves}
            for column, leaves in state.items()
        }


def _check_leaf(column: str, extremes: tuple[int, int], old: Any, new: Any) -> None:
    if old is None or new is None or old.equals(new):
        return
    for value in extremes:
        try:
            pa.array([value], old).cast(new, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise Widening(column, value, old, new) from None


def _integer_leaves(array: pa.Array, leaf: Leaf) -> Iterator[tuple[Leaf, pa.Array]]:
    """Yield the path and values of every integer leaf inside ``array``."""
    kind = array.type
    if pa.types.is_integer(kind):
        yield leaf, array
    elif pa.types.is_dictionary(kind):
        yield from _integer_leaves(array.dictionary, leaf)
    elif pa.types.is_struct(kind):
        for field, child in zip(kind, array.flatten(), strict=True):
            yield from _integer_leaves(child, (*leaf, f".{field.name}"))
    elif pa.types.is_map(kind):
        # The keys and items of the whole child array, sliced or not: a
        # superset, which can only make the check stricter.
        yield from _integer_leaves(array.keys, (*leaf, "{key}"))
        yield from _integer_leaves(array.items, (*leaf, "{item}"))
    elif kind_of(kind) == "list":
        yield from _integer_leaves(array.flatten(), (*leaf, "[]"))


def _leaf_type(kind: pa.DataType, leaf: Leaf) -> pa.DataType | None:
    """Return the type at ``leaf`` inside ``kind``, or ``None`` if ``kind`` has no such leaf."""
    for step in leaf:
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if step == "[]" and kind_of(kind) == "list":
            kind = kind.value_type
        elif step in ("{key}", "{item}") and pa.types.is_map(kind):
            kind = kind.key_type if step == "{key}" else kind.item_type
        elif step.startswith(".") and pa.types.is_struct(kind) and kind.get_field_index(step[1:]) >= 0:
            kind = kind.field(step[1:]).type
        else:
            return None
    return kind.value_type if pa.types.is_dictionary(kind) else kind
