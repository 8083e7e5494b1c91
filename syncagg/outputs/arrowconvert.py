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
time-zone-aware datetimes) are rejected.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pyarrow as pa

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

    Raises ``pa.ArrowInvalid`` when a value would change, such as an
    integer above 2**53 cast to float64.
    """
    if table.schema.equals(schema):
        return table
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type, safe=True))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


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
            return table
        if self.declared is not None or self._fixed:
            if any(self.schema.get_field_index(name) < 0 for name in table.column_names):
                raise _Misfit()
            _check_declared_time_zones(table.schema, self.schema)
            return conform(table, self.schema)
        table = _align_time_zones(table, self.schema)
        wider = unify([self.schema, table.schema])
        result = conform(table, wider)
        self.schema = wider
        return result

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
        if self.schema is not None and (self.declared is not None or self._fixed):
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
        for key, value in row.items():
            expected = None
            if self.schema is not None and self.schema.get_field_index(key) >= 0:
                expected = self.schema.field(key).type
            problem = _column_problem(value, expected, widen=self.declared is None and not self._fixed)
            if problem is not None:
                return f"column {key!r}: value {_short(value)} ({type(value).__qualname__}) {problem}"
        return f"the row does not fit the schema ({error}); {ONE_TYPE_FIX}"


class _Misfit(Exception):
    """A batch that does not fit the schema as a whole."""


_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, _Misfit, TypeError, ValueError)


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


def _check_declared_time_zones(inferred: pa.Schema, target: pa.Schema) -> None:
    """Raise ``_Misfit`` where naive datetimes meet a column with a time zone, or the reverse.

    A cast between them would assume UTC silently.
    """
    for field in inferred:
        expected = target.field(field.name).type
        both = pa.types.is_timestamp(field.type) and pa.types.is_timestamp(expected)
        if both and (field.type.tz is None) != (expected.tz is None):
            raise _Misfit()


def _column_problem(value: Any, expected: pa.DataType | None, widen: bool) -> str | None:
    """Return how ``value`` fails to fit ``expected``, or ``None`` if it fits."""
    try:
        inferred = pa.array([_prepare_value(value)])
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
        aligned = _align_time_zones(pa.table({"x": inferred}), pa.schema([("x", expected)]))
        try:
            unify([pa.schema([("x", expected)]), aligned.schema])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return f"does not fit {expected}, the type of earlier rows; {ONE_TYPE_FIX}"
        return None
    try:
        inferred.cast(expected, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        return (
            f"does not fit the declared type {expected} ({exc}); change the declared type, "
            "or convert the value in the job function"
        )
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
