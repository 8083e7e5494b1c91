"""Output rows with a status column, for outputs that receive failed jobs too.

A pipeline can let failed results reach the outputs
(``Pipeline.writes_failed``). Each failed job then becomes one row with the
columns in ``FAILED_COLUMNS``. Each successful row gets a ``status`` column
of ``"ok"``, so that a reader can tell the two kinds apart. The collector
builds these rows in the same batch as the other rows, so a checkpoint
covers them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from syncagg.errors import OutputError
from syncagg.outputs.base import Output
from syncagg.outputs.csvfile import Csv
from syncagg.outputs.tables import is_table
from syncagg.records import JobResult, Status

__all__ = ["FAILED_COLUMNS", "STATUS_COLUMN", "check_outputs", "failed_row", "with_ok_status"]

STATUS_COLUMN = "status"
FAILED_COLUMNS = ("job_id", "key", STATUS_COLUMN, "error_type", "error_message")

# Maps the index of a value in one batch to the id and key of its job.
Origin = Callable[[int], tuple[int, str]]


def failed_row(result: JobResult) -> dict[str, Any]:
    """Return the output row of a failed job, with the columns in ``FAILED_COLUMNS``."""
    error = result.error
    return {
        "job_id": result.job_id,
        "key": result.key,
        STATUS_COLUMN: Status.FAILED.value,
        "error_type": None if error is None else error.type,
        "error_message": None if error is None else error.message,
    }


def with_ok_status(values: list[Any], origin: Origin) -> list[Any]:
    """Return the values with a ``status`` of ``"ok"`` added to each of their rows.

    A dict gets the key, a pyarrow table gets a column, and any other value
    ``v`` becomes ``{"value": v, "status": "ok"}``. Raises ``OutputError``
    naming the job if a row has a ``status`` field already, because
    overwriting it would lose the job's own value.
    """
    tagged = []
    for index, value in enumerate(values):
        if isinstance(value, dict):
            if STATUS_COLUMN in value:
                raise _status_taken(origin(index))
            tagged.append({**value, STATUS_COLUMN: Status.OK.value})
        elif is_table(value):
            if STATUS_COLUMN in value.column_names:
                raise _status_taken(origin(index))
            column = pa.array([Status.OK.value] * value.num_rows, pa.string())
            tagged.append(value.append_column(STATUS_COLUMN, column))
        else:
            tagged.append({"value": value, STATUS_COLUMN: Status.OK.value})
    return tagged


def check_outputs(outputs: Sequence[Output]) -> None:
    """Raise ``ValueError`` for an output that cannot hold failed and successful rows together.

    A CSV output without declared columns takes them from its first rows,
    which may be of either kind. ``extra="error"`` would then stop the run
    at the first row of the other kind, and ``extra="ignore"`` would drop
    that row's columns without a trace.
    """
    for output in outputs:
        if isinstance(output, Csv) and output.columns is None and output.extra in ("error", "ignore"):
            raise ValueError(
                f"CSV output {str(output.path)!r} receives failed jobs, whose columns "
                f"{list(FAILED_COLUMNS)} differ from those of successful rows, but it takes its "
                f"columns from the first rows and has extra={output.extra!r}; pass "
                f"Csv({str(output.path)!r}, extra='extend'), or list every column with columns=[...]"
            )


def _status_taken(job: tuple[int, str]) -> OutputError:
    job_id, key = job
    return OutputError(
        f"job {job_id} ({key}) returned a row with a {STATUS_COLUMN!r} field, but the outputs "
        f"receive failed jobs too, so every row gets a {STATUS_COLUMN!r} column of "
        "syncagg's own; rename the field in the job function, or keep failed jobs out of "
        "the outputs (where(status='ok'), or --where ok on the command line)"
    )
