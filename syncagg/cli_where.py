"""``syncagg run --where STATUS``: which results go on to the strategy and the outputs."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from syncagg.cli_errors import UsageError
from syncagg.outputs.base import Output
from syncagg.outputs.csvfile import Csv
from syncagg.pipeline import Pipeline
from syncagg.records import Status
from syncagg.stages import ALL_STATUSES

__all__ = ["WHERE_CHOICES", "fit_outputs", "parse_where", "where_pipeline"]

WHERE_CHOICES = (Status.OK.value, Status.FAILED.value, ALL_STATUSES)


def parse_where(text: str) -> frozenset[Status]:
    """Return the statuses of one ``--where`` value, such as ``ok``, ``all`` or ``ok,failed``.

    Raises ``argparse.ArgumentTypeError`` naming the part that is not a status.
    """
    statuses: set[Status] = set()
    for part in text.split(","):
        name = part.strip().lower()
        if name == ALL_STATUSES:
            statuses.update(Status)
        elif name in (Status.OK.value, Status.FAILED.value):
            statuses.add(Status(name))
        else:
            raise argparse.ArgumentTypeError(
                f"expected {', '.join(WHERE_CHOICES[:-1])} or {WHERE_CHOICES[-1]}, "
                f"or several of them separated by commas, got {part!r}"
            )
    return frozenset(statuses)


def where_pipeline(values: Iterable[frozenset[Status]]) -> Pipeline | None:
    """Return the pipeline for the ``--where`` values, or ``None`` for successful results only.

    Repeated options add up. Without ``--where``, or with ``--where ok``,
    the run has no pipeline, as before the option existed, so its
    checkpoints stay interchangeable with those of runs without it.
    """
    statuses: set[Status] = set()
    for value in values:
        statuses |= value
    if not statuses or statuses == {Status.OK}:
        return None
    return Pipeline().where(status=sorted(status.value for status in statuses))


def fit_outputs(outputs: list[Output], pipeline: Pipeline | None) -> list[Output]:
    """Return the outputs, with CSV files able to add columns when failed rows come too.

    A CSV file takes its columns from its first rows. Failed rows and
    successful rows have different columns, so each CSV output gets
    ``extra="extend"``, which adds a column when a row brings a new one.
    Raises ``UsageError`` for ``--csv-extra ignore``, which would drop them.
    """
    if pipeline is None or not pipeline.writes_failed():
        return outputs
    for output in outputs:
        if type(output) is Csv and output.extra == "ignore":
            raise UsageError(
                "--csv-extra ignore drops the columns of failed rows, which --where sends to "
                f"{str(output.path)!r}; use --csv-extra extend, or leave it out"
            )
    return [Csv(output.path, extra="extend") if type(output) is Csv else output for output in outputs]
