"""Schemas for dict results: field names, types and nullability.

``Pipeline.validate`` checks each result against a ``Schema``, a dict of
field name to type, or a ``pyarrow.Schema``. A result that does not match
becomes a dead letter with the reason, instead of failing an output later.
"""

from __future__ import annotations

import datetime
import decimal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Field", "Schema", "SchemaMismatch", "as_schema"]


class SchemaMismatch(ValueError):
    """A value does not match a schema; the message names the field."""


@dataclass(frozen=True)
class Field:
    """One declared field.

    Attributes
    ----------
    type : type or tuple of types
        The accepted Python types. ``float`` accepts ints too, ``int`` does
        not accept bools, and ``object`` accepts anything.
    nullable : bool, default False
        Whether the field may be ``None`` or missing.
    """

    type: type | tuple[type, ...]
    nullable: bool = False

    def describe(self) -> str:
        """Return the type as text, for example ``int | None``."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        names = [kind.__name__ for kind in types]
        if self.nullable:
            names.append("None")
        return " | ".join(names)


class Schema:
    """The fields that dict results must have.

    Parameters
    ----------
    fields : mapping of str to type, tuple of types or Field
        A type, a tuple of types, or a ``Field`` for each field. ``None`` in
        a tuple makes the field nullable: ``{"note": (str, None)}``.
    extra : bool, default True
        Accept fields that the schema does not declare.

    Examples
    --------
    >>> schema = Schema({"path": str, "lines": int, "note": (str, None)})
    >>> schema.check({"path": "a.py", "lines": 3})
    >>> schema.check({"path": "a.py", "lines": "3"})
    Traceback (most recent call last):
    ...
    syncagg.schema.SchemaMismatch: field 'lines' must be int, got str '3'
    """

    def __init__(self, fields: Mapping[str, Any], extra: bool = True) -> None:
        if not isinstance(fields, Mapping):
            raise TypeError(
                f"Schema(fields) must be a mapping of field name to type, got {fields!r}"
            )
        self.fields = {name: _as_field(name, spec) for name, spec in fields.items()}
        self.extra = bool(extra)

    @classmethod
    def from_arrow(cls, schema: Any, extra: bool = True) -> Schema:
        """Return the schema of a ``pyarrow.Schema``: its names, Python types and nullability."""
        fields = {
            field.name: Field(_python_type(field.type), nullable=field.nullable) for field in schema
        }
        return cls(fields, extra=extra)

    def check(self, value: Any) -> None:
        """Raise ``SchemaMismatch`` naming the first field that does not match."""
        if not isinstance(value, Mapping):
            raise SchemaMismatch(
                f"the value must be a dict with fields {sorted(self.fields)}, "
                f"got {type(value).__qualname__}"
            )
        for name, field in self.fields.items():
            if name not in value or value[name] is None:
                if not field.nullable:
                    state = "missing" if name not in value else "None"
                    raise SchemaMismatch(f"field {name!r} is {state}, but it is not nullable")
                continue
            if not _matches(value[name], field.type):
                got = value[name]
                raise SchemaMismatch(
                    f"field {name!r} must be {field.describe()}, got "
                    f"{type(got).__qualname__} {_short(got)}"
                )
        if not self.extra:
            unknown = [name for name in value if name not in self.fields]
            if unknown:
                raise SchemaMismatch(
                    f"fields {unknown} are not in the schema; declare them or pass extra=True"
                )

    def describe(self) -> str:
        """Return the fields as text; part of a checkpoint's fingerprint."""
        fields = ", ".join(f"{name}: {field.describe()}" for name, field in self.fields.items())
        return f"Schema({fields}{'' if self.extra else ', extra=False'})"

    def __repr__(self) -> str:
        return self.describe()


def as_schema(schema: Any) -> Schema:
    """Return a ``Schema`` for a ``Schema``, a dict of field types or a ``pyarrow.Schema``."""
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, Mapping):
        return Schema(schema)
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None and isinstance(schema, pyarrow.Schema):
        return Schema.from_arrow(schema)
    raise TypeError(
        f"validate() takes a syncagg.Schema, a dict of field name to type or a "
        f"pyarrow.Schema, got {schema!r} of type {type(schema).__qualname__}"
    )


def _as_field(name: str, spec: Any) -> Field:
    if isinstance(spec, Field):
        return spec
    types = spec if isinstance(spec, tuple) else (spec,)
    nullable = any(kind is None or kind is type(None) for kind in types)
    accepted = tuple(kind for kind in types if kind is not None and kind is not type(None))
    if not accepted or not all(isinstance(kind, type) for kind in accepted):
        raise TypeError(
            f"the type of field {name!r} must be a type, a tuple of types or a "
            f"syncagg.Field, got {spec!r}"
        )
    return Field(accepted[0] if len(accepted) == 1 else accepted, nullable=nullable)


def _matches(value: Any, expected: type | tuple[type, ...]) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    for kind in types:
        if kind is object:
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind not in (int, float) and isinstance(value, kind):
            return True
    return False


def _python_type(arrow_type: Any) -> type | tuple[type, ...]:
    """Return the Python types that ``pyarrow`` converts to ``arrow_type``."""
    import pyarrow.types as types

    checks: list[tuple[Any, type | tuple[type, ...]]] = [
        (types.is_boolean, bool),
        (types.is_integer, int),
        (types.is_floating, float),
        (types.is_decimal, decimal.Decimal),
        (lambda t: types.is_string(t) or types.is_large_string(t), str),
        (lambda t: types.is_binary(t) or types.is_large_binary(t), bytes),
        (types.is_timestamp, datetime.datetime),
        (types.is_date, datetime.date),
        (lambda t: types.is_list(t) or types.is_large_list(t), (list, tuple)),
        (lambda t: types.is_struct(t) or types.is_map(t), dict),
    ]
    for check, python_type in checks:
        if check(arrow_type):
            return python_type
    return object


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
