"""The columnar path: jobs that return Arrow tables, and encoding them in the workers.

A job may return a ``pyarrow.RecordBatch`` or ``pyarrow.Table``; each of
its rows is one output row. Pickle protocol 5 carries the table's buffers
out of band through the ring (``syncagg/transport.py``), so the collector
receives whole columns and hands them to the writers without building a
Python object per row. Parquet and Arrow IPC write them as they are, CSV
through pyarrow's CSV writer when every column has a plain type.

With ``Aggregator(encode_in_workers=True)`` the job function is wrapped in
``TableEncoder``: after the function returns a table, the worker also runs
each output's ``worker_encoder`` on it (JSON Lines, JSON and CSV text), so
the writer in the parent only appends bytes. The collector unwraps the
``EncodedTable`` before the strategy and the hooks see the value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from syncagg.outputs.base import Output

__all__ = ["EncodedTable", "TableEncoder", "is_table", "split_rows", "table_encoder", "unwrap_encoded"]

_TABLE_TYPES = (pa.RecordBatch, pa.Table)

# One run of a batch's values: (index of the first value, rows, table).
# Exactly one of rows and table is set.
Run = tuple[int, "list[dict[str, Any]] | None", "Any | None"]


def is_table(value: Any) -> bool:
    """Return whether ``value`` is a ``pyarrow.RecordBatch`` or ``pyarrow.Table``."""
    return isinstance(value, _TABLE_TYPES)


@dataclass
class EncodedTable:
    """A table a job returned, with what the worker encoded for each output.

    Attributes
    ----------
    table : pyarrow.Table or pyarrow.RecordBatch
        The job's value.
    payloads : dict
        Output path (as ``str``) to that output's encoding of the table,
        ``None`` where the encoder could not encode it.
    """

    table: Any
    payloads: dict[str, Any] = field(default_factory=dict)


class TableEncoder:
    """Wrap a job function so that a worker encodes each table it returns for the outputs.

    Parameters
    ----------
    fn : callable
        The job function (with any pipeline stages that run in the workers).
    encoders : dict
        Output path (as ``str``) to that output's ``worker_encoder()``.
    """

    def __init__(self, fn: Callable[[Any], Any], encoders: dict[str, Callable[[Any], Any]]) -> None:
        self.fn = fn
        self.encoders = encoders

    def __call__(self, item: Any) -> Any:
        value = self.fn(item)
        if not isinstance(value, _TABLE_TYPES):
            return value
        return EncodedTable(value, {path: encode(value) for path, encode in self.encoders.items()})


def table_encoder(fn: Callable[[Any], Any], outputs: Sequence[Output]) -> Callable[[Any], Any]:
    """Return ``fn`` wrapped to encode its tables for the outputs that can, or ``fn`` if none can."""
    encoders = {}
    for output in outputs:
        encode = output.worker_encoder()
        if encode is not None:
            encoders[str(output.path)] = encode
    return TableEncoder(fn, encoders) if encoders else fn


def unwrap_encoded(values: list[Any]) -> dict[int, dict[str, Any]]:
    """Replace each ``EncodedTable`` in ``values`` by its table; return payloads by ``id(table)``."""
    payloads: dict[int, dict[str, Any]] = {}
    for index, value in enumerate(values):
        if isinstance(value, EncodedTable):
            values[index] = value.table
            payloads[id(value.table)] = value.payloads
    return payloads


def split_rows(values: list[Any]) -> list[Run]:
    """Split a batch's values into runs of rows and single tables, in order.

    A dict is a row, a table contributes its rows, and any other value ``v``
    becomes the row ``{"value": v}``.
    """
    runs: list[Run] = []
    rows: list[dict[str, Any]] = []
    first = 0
    for index, value in enumerate(values):
        if isinstance(value, dict):
            rows.append(value)
        elif isinstance(value, _TABLE_TYPES):
            if rows:
                runs.append((first, rows, None))
                rows = []
            runs.append((index, None, value))
            first = index + 1
        else:
            rows.append({"value": value})
    if rows:
        runs.append((first, rows, None))
    return runs
