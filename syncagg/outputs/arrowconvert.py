"""Turning rows into Arrow tables under a schema: inferred and widened, or declared.

Used by the columnar formats (Parquet, Arrow IPC). The fast path converts
a whole batch at once. When that fails, each row is converted on its own,
so that only the rows that do not fit are rejected, each with a reason
that names the column, the value and the expected type.

Widening, when no schema is declared: a column that held only nulls takes
the type of later values, integers widen to floats, decimals widen to a
precision and scale that hold both, structs gain the fields of later rows,
and a column that appears later is added with nulls in the earlier rows.
Values that share no type with earlier rows (text and numbers, naive and
time-zone-aware datetimes) are rejected. So is a value whose widening
would change an integer of an earlier row, such as a float in a column
that contains 2**53 + 1, which float64 cannot represent exactly
(``intranges.py``).

A declared schema, or the fixed schema of a live file, takes only values
of each column's own kind (``arrowkinds.py``): no text parsed as a number,
no bool as 0 or 1. Integers outside the int64 range have no Arrow type
unless they arrive as ``Decimal``, and are rejected.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from syncagg.outputs.arrowkinds import kind_problem
from syncagg.outputs.intranges import IntegerRanges, Widening

__all__ = ["ONE_TYPE_FIX", "TableConverter", "conform", "unify"]

ONE_TYPE_FIX = (
    "return one type per column from the job function, for example str(value) "
    "for a column that mixes text and numbers"
)

Reject = Callable[[int, dict[str, Any], str], None]


def unify(schemas: list[pa.Schema]) -> pa.Schema:
    """Return the widest schema of ``schemas``, or raise ``pa.ArrowInvalid``/``ArrowTypeError``."""
    return pa.unify_schemas(schemas, promote_options="permissive")


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``table`` to ``schema`` safely, adding missing columns as nulls.

    Raises ``pa.ArrowInvalid``, naming the column, when a value would
    change, such as an integer above 2**53 cast to float64.
    """
    if table.schema.equals(schema):
        return table
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(_cast_column(table.column(field.name), field))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _cast_column(column: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    if column.type.equals(field.type):
        return column
    try:
        return column.cast(field.type, safe=True)
    except pa.ArrowInvalid as exc:
        raise pa.ArrowInvalid(f"column {field.name!r} to {field.type}: {exc}") from exc


class TableConverter:
    """Convert rows and tables to the output's schema, rejecting what does not fit.

    Parameters
    ----------
    declared : pyarrow.Schema, optional
        The schema of every row. Without it the schema is inferred from the
        first rows and widened by later ones.
    reject : callable
        ``reject(index, row, reason)`` for a row that does not fit; it
        raises or keeps the row for the dead letters.
    fixed : bool, default False
        Whether the schema stops widening once set (a live file cannot
        change the schema of row groups already written).
    """

    def __init__(self, declared: pa.Schema | None, reject: Reject, fixed: bool = False) -> None:
        self.declared = declared
        self.schema: pa.Schema | None = declared
        self._reject = reject
        self._fixed = fixed
        self._ranges = IntegerRanges()

    @property
    def _widens(self) -> bool:
        return self.declared is None and not self._fixed

    def state(self) -> Any:
        """Return what a resume needs besides the schema, as small picklable data.

        An output that widens its schema must store this in its checkpoint
        position and pass it to ``restore`` on resume. Without it a resumed
        converter has forgotten the integers of the earlier rows, and may
        widen a column to a type that cannot hold them.
        """
        return self._ranges.state()

    def restore(self, state: Any) -> None:
        """Take back what ``state`` returned; ``None`` (an older checkpoint) restores nothing."""
        if state is not None:
            self._ranges.restore(state)

    def from_rows(self, rows: list[dict[str, Any]]) -> pa.Table | None:
        """Return the rows as a table of the current schema, or ``None`` if none fit."""
        if not rows:
            return None
        try:
            return self._fit(_infer(rows), rows)
        except _ERRORS:
            pass
        try:
            # Values such as 2-D numpy arrays convert once they are nested lists.
            return self._fit(_infer([_prepare(row) for row in rows]), rows)
        except _ERRORS:
            return self._row_by_row(rows)

    def from_table(self, table: pa.Table) -> pa.Table | None:
        """Return ``table`` cast to the current schema; on failure convert its rows one by one."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows == 0:
            return None
        try:
            return self._fit(table, None)
        except _ERRORS:
            return self._row_by_row(table.to_pylist())

    def _fit(self, table: pa.Table, rows: list[dict[str, Any]] | None) -> pa.Table:
        """Cast an inferred table to the schema, widening it if allowed; raise on any misfit."""
        if rows is not None:
            _check_time_zones(table, rows)
        if self.schema is None:
            self.schema = table.schema
            self._track(table)
            return table
        if not self._widens:
            if any(self.schema.get_field_index(name) < 0 for name in table.column_names):
                raise _Misfit()
            _check_declared_time_zones(table.schema, self.schema)
            _check_declared_kinds(table.schema, self.schema)
            return conform(table, self.schema)
        table = _align_time_zones(table, self.schema)
        wider = unify([self.schema, table.schema])
        self._ranges.check_widening(self.schema, wider)
        result = conform(table, wider)
        self.schema = wider
        self._track(result)
        return result

    def _track(self, table: pa.Table) -> None:
        if self._widens:
            self._ranges.add(table)

    def _row_by_row(self, rows: list[dict[str, Any]]) -> pa.Table | None:
        """Convert rows one at a time, rejecting each one that does not fit."""
        kept: list[pa.Table] = []
        for index, row in enumerate(rows):
            reason = self._misfit(row)
            if reason is None:
                try:
                    kept.append(self._fit(_infer([_prepare(row)]), [row]))
                    continue
                except _ERRORS as exc:
                    reason = self._explain(row, exc)
            self._reject(index, row, reason)
        if not kept:
            return None
        assert self.schema is not None
        return pa.concat_tables([conform(table, self.schema) for table in kept])

    def _misfit(self, row: dict[str, Any]) -> str | None:
        """Return why the row's keys do not fit, or ``None``."""
        for key in row:
            if not isinstance(key, str):
                return (
                    f"key {key!r} is a {type(key).__qualname__}, but column names must be str; "
                    "convert the keys with str() in the job function"
                )
        if self.schema is not None and not self._widens:
            extra = sorted(key for key in row if self.schema.get_field_index(key) < 0)
            if extra:
                names = ", ".join(self.schema.names)
                return (
                    f"keys {extra} are not in the schema ({names}); add them to the declared "
                    "schema or drop them in the job function"
                )
        return None

    def _explain(self, row: dict[str, Any], error: BaseException) -> str:
        """Name the column whose value does not fit, its value and the expected type."""
        if isinstance(error, Widening):
            return _widening_reason(row, error)
        for key, value in row.items():
            expected = None
            if self.schema is not None and self.schema.get_field_index(key) >= 0:
                expected = self.schema.field(key).type
            problem = _column_problem(value, expected, self._widens, self.declared is not None)
            if problem is not None:
                return f"column {key!r}: {_describe(value)} {problem}"
        return f"the row does not fit the schema ({error}); {ONE_TYPE_FIX}"


class _Misfit(Exception):
    """A batch that does not fit the schema as a whole."""


# OverflowError: pyarrow infers no type for an int outside the int64 range.
_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    _Misfit,
    Widening,
    TypeError,
    ValueError,
    OverflowError,
)

_INT64_FIX = (
    "is outside the int64 range (-2**63 to 2**63 - 1), the widest integer type that "
    "Arrow infers; return such values as Decimal(value) for a decimal column, or "
    "str(value) for a text column, in the job function"
)


def _infer(rows: list[dict[str, Any]]) -> pa.Table:
    """Infer a table from rows, with every key of every row as a column."""
    first = rows[0].keys()
    seen: set[Any] = set()
    for row in rows:
        seen.update(row)
    if len(seen) == len(first):
        # pyarrow takes the column names from the first row only.
        return pa.Table.from_pylist(rows)
    names = dict.fromkeys(key for row in rows for key in row)
    return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in names})


def _prepare(row: dict[str, Any]) -> dict[str, Any]:
    """Turn values that pyarrow rejects but that have a natural Arrow form into lists."""
    return {key: _prepare_value(value) for key, value in row.items()}


def _prepare_value(value: Any) -> Any:
    if type(value).__module__ == "numpy" and getattr(value, "ndim", 0) > 1:
        # pyarrow converts only one-dimensional arrays; nested lists keep the shape.
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, dict):
        return {key: _prepare_value(item) for key, item in value.items()}
    return value


def _check_time_zones(table: pa.Table, rows: list[dict[str, Any]]) -> None:
    """Raise ``_Misfit`` if a timestamp column mixes naive and time-zone-aware datetimes.

    pyarrow takes the time zone of the first value and converts the rest
    silently, which would shift naive values by the zone's offset.
    """
    # NOTE: only top-level columns are checked; datetimes inside structs or
    # lists that mix naive and aware values are converted as pyarrow does.
    for field in table.schema:
        if not pa.types.is_timestamp(field.type):
            continue
        aware = field.type.tz is not None
        for row in rows:
            value = row.get(field.name)
            if isinstance(value, datetime.datetime) and (value.tzinfo is not None) != aware:
                raise _Misfit()


def _align_time_zones(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast time-zone-aware columns to the zone of the same column in ``schema``.

    The cast keeps each instant and changes only the zone it is shown in,
    so datetimes in different zones can share one column.
    """
    for index, field in enumerate(table.schema):
        position = schema.get_field_index(field.name)
        if position < 0 or not pa.types.is_timestamp(field.type) or field.type.tz is None:
            continue
        expected = schema.field(position).type
        if pa.types.is_timestamp(expected) and expected.tz is not None and expected != field.type:
            table = table.set_column(index, field.with_type(expected), table.column(index).cast(expected))
    return table


def _check_declared_kinds(inferred: pa.Schema, target: pa.Schema) -> None:
    """Raise ``_Misfit`` where a column's values would be cast from another kind."""
    for field in inferred:
        if kind_problem(field.type, target.field(field.name).type) is not None:
            raise _Misfit()


def _check_declared_time_zones(inferred: pa.Schema, target: pa.Schema) -> None:
    """Raise ``_Misfit`` where naive datetimes meet a column with a time zone, or the reverse.

    A cast between them would assume UTC silently.
    """
    for field in inferred:
        expected = target.field(field.name).type
        both = pa.types.is_timestamp(field.type) and pa.types.is_timestamp(expected)
        if both and (field.type.tz is None) != (expected.tz is None):
            raise _Misfit()


def _column_problem(value: Any, expected: pa.DataType | None, widen: bool, declared: bool) -> str | None:
    """Return how ``value`` fails to fit ``expected``, or ``None`` if it fits."""
    try:
        inferred = pa.array([_prepare_value(value)])
    except OverflowError:
        return _INT64_FIX if isinstance(value, int) else f"holds an integer that {_INT64_FIX}"
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        return f"has no Arrow type ({exc}); {ONE_TYPE_FIX}"
    if expected is None:
        return None
    is_datetime = isinstance(value, datetime.datetime) and pa.types.is_timestamp(expected)
    if is_datetime and (value.tzinfo is not None) != (expected.tz is not None):
        zone = "a time zone" if expected.tz is not None else "no time zone"
        return (
            f"does not fit {expected}, which has {zone}; return every datetime of a "
            "column either with a time zone or without one"
        )
    if widen:
        return _widening_problem(inferred, expected)
    target = f"the declared type {expected}" if declared else f"{expected}, the type of the live file"
    fix = "change the declared type, or " if declared else ""
    problem = kind_problem(inferred.type, expected)
    if problem is not None:
        return f"does not fit {target}: {problem}; {fix}convert the value in the job function"
    try:
        inferred.cast(expected, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        return f"does not fit {target} ({exc}); {fix}convert the value in the job function"
    return None


def _widening_problem(inferred: pa.Array, expected: pa.DataType) -> str | None:
    """Return how a value fails to widen a column of type ``expected``, or ``None``."""
    aligned = _align_time_zones(pa.table({"x": inferred}), pa.schema([("x", expected)]))
    try:
        wider = unify([pa.schema([("x", expected)]), aligned.schema]).field(0).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return f"does not fit {expected}, the type of earlier rows; {ONE_TYPE_FIX}"
    try:
        aligned.column(0).cast(wider, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return (
            f"would change when cast to {wider}, the common type of it and earlier rows ({exc}); "
            f"{ONE_TYPE_FIX}"
        )
    return None


def _widening_reason(row: dict[str, Any], widening: Widening) -> str:
    value = row.get(widening.column)
    return (
        f"column {widening.column!r}: {_describe(value)} would widen {widening.old} to "
        f"{widening.new}, but an earlier row contains the integer {widening.value}, which "
        f"{widening.new} cannot hold exactly; return one type per column from the job "
        "function, for example float(value) in every row if rounding is acceptable"
    )


def _describe(value: Any) -> str:
    return f"value {_short(value)} ({type(value).__qualname__})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
