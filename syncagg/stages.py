"""Pipeline stages: what each stage does to the value of one result.

A stage returns the value it passes on, returns ``FILTERED`` to filter the
result out, or raises to make the result a dead letter. ``run_stages`` turns
those outcomes into a value or a ``Rejection``, which is small and pickles,
so stages can run in a worker and send back only the outcome.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from syncagg.names import qualified_name
from syncagg.normalizing import Normalizer
from syncagg.records import Status
from syncagg.schema import Schema, SchemaMismatch

__all__ = [
    "ALL_STATUSES",
    "DEAD_LETTER",
    "FILTERED",
    "FILTERED_OUT",
    "PASSED",
    "Map",
    "Normalize",
    "Rejection",
    "Stage",
    "StagedFunction",
    "Validate",
    "Where",
    "run_stages",
]

# where(status=ALL_STATUSES) passes both successful and failed results.
ALL_STATUSES = "all"

PASSED = "passed"
FILTERED_OUT = "filtered_out"
DEAD_LETTER = "dead_letter"

# Returned by Stage.apply to filter a result out; never pickled.
FILTERED: Any = object()

_VALUE_TEXT_LIMIT = 1000


@dataclass(frozen=True)
class Rejection:
    """A result that a stage filtered out or made a dead letter.

    Attributes
    ----------
    stage : int
        Position of the stage in the pipeline, from 0.
    outcome : str
        ``"filtered_out"`` or ``"dead_letter"``.
    reason : str
        Why the stage rejected the value; empty when filtered out.
    value : str
        ``repr`` of the value the stage received, cut to 1000 characters;
        empty when filtered out.
    """

    stage: int
    outcome: str
    reason: str = ""
    value: str = ""


class Stage(abc.ABC):
    """One step of a pipeline.

    ``in_workers`` is True or False when the stage chose where it runs, and
    ``None`` when it follows the pipeline's setting.
    """

    kind: ClassVar[str]

    def __init__(self, in_workers: bool | None = None) -> None:
        self.in_workers = in_workers

    @abc.abstractmethod
    def apply(self, value: Any) -> Any:
        """Return the value to pass on or ``FILTERED``; raise to make a dead letter."""

    def allows(self, status: Status) -> bool:
        """Return True if a result of this status passes; failed results get only this check."""
        return True

    def details(self) -> str:
        """Return the settings as text, for ``describe``."""
        return ""

    def callables(self) -> list[Any]:
        """Return the user functions of the stage, which must pickle to run in a worker."""
        return []

    def describe(self) -> str:
        """Return the stage and its settings as text, for example ``map(mod.fn)``."""
        return f"{self.kind}({self.details()})"


class Where(Stage):
    """Pass results whose status and value match; filter out the rest."""

    kind = "where"

    def __init__(
        self,
        predicate: Callable[[Any], Any] | None = None,
        status: str | Status | Iterable[str | Status] | None = None,
        in_workers: bool | None = None,
    ) -> None:
        super().__init__(in_workers)
        if predicate is None and status is None:
            raise TypeError("where() needs a predicate, a status, or both")
        if predicate is not None and not callable(predicate):
            raise TypeError(
                f"where(predicate) must be callable, got {predicate!r} of type "
                f"{type(predicate).__qualname__}"
            )
        self.predicate = predicate
        self.statuses = None if status is None else _as_statuses(status)

    def apply(self, value: Any) -> Any:
        if self.statuses is not None and Status.OK not in self.statuses:
            return FILTERED
        if self.predicate is not None and not self.predicate(value):
            return FILTERED
        return value

    def allows(self, status: Status) -> bool:
        return self.statuses is None or status in self.statuses

    def details(self) -> str:
        parts = []
        if self.predicate is not None:
            parts.append(qualified_name(self.predicate))
        if self.statuses is not None:
            names = sorted(status.value for status in self.statuses)
            parts.append(f"status={names[0]!r}" if len(names) == 1 else f"status={names!r}")
        return ", ".join(parts)

    def callables(self) -> list[Any]:
        return [] if self.predicate is None else [self.predicate]


class Map(Stage):
    """Replace each value with ``fn(value)``."""

    kind = "map"

    def __init__(self, fn: Callable[[Any], Any], in_workers: bool | None = None) -> None:
        super().__init__(in_workers)
        if not callable(fn):
            raise TypeError(f"map(fn) must be callable, got {fn!r} of type {type(fn).__qualname__}")
        self.fn = fn

    def apply(self, value: Any) -> Any:
        return self.fn(value)

    def details(self) -> str:
        return qualified_name(self.fn)

    def callables(self) -> list[Any]:
        return [self.fn]


class Validate(Stage):
    """Pass values that match a schema; make the others dead letters."""

    kind = "validate"

    def __init__(self, schema: Schema, in_workers: bool | None = None) -> None:
        super().__init__(in_workers)
        self.schema = schema

    def apply(self, value: Any) -> Any:
        self.schema.check(value)
        return value

    def details(self) -> str:
        return self.schema.describe()


class Normalize(Stage):
    """Convert numpy scalars, datetimes and NaN (see ``Normalizer``)."""

    kind = "normalize"

    def __init__(self, normalizer: Normalizer, in_workers: bool | None = None) -> None:
        super().__init__(in_workers)
        self.normalizer = normalizer

    def apply(self, value: Any) -> Any:
        return self.normalizer(value)

    def details(self) -> str:
        return self.normalizer.describe()


def run_stages(stages: Sequence[Stage], first: int, value: Any) -> Any:
    """Pass ``value`` through ``stages``; return the result or a ``Rejection``.

    ``first`` is the pipeline position of ``stages[0]``, for the rejection.
    """
    for offset, stage in enumerate(stages):
        try:
            result = stage.apply(value)
        except Exception as exc:  # noqa: BLE001 - a failing stage makes a dead letter
            return Rejection(first + offset, DEAD_LETTER, _reason(exc), _value_text(value))
        if result is FILTERED:
            return Rejection(first + offset, FILTERED_OUT)
        value = result
    return value


class StagedFunction:
    """The user's function followed by the stages that run where it runs.

    Picklable when the function and the stages are, so it travels to worker
    processes in place of the function. It takes the function's name, so
    messages and checkpoints name the user's function.
    """

    def __init__(self, fn: Callable[[Any], Any], stages: Sequence[Stage]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.stages = list(stages)

    def __call__(self, item: Any) -> Any:
        return run_stages(self.stages, 0, self.fn(item))


def _reason(exc: Exception) -> str:
    if isinstance(exc, SchemaMismatch):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _value_text(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not hide the dead letter
        return f"<{type(value).__qualname__}: repr failed with {type(exc).__name__}>"
    if len(text) > _VALUE_TEXT_LIMIT:
        return text[: _VALUE_TEXT_LIMIT - 3] + "..."
    return text


def _as_statuses(status: str | Status | Iterable[str | Status]) -> frozenset[Status]:
    items = [status] if isinstance(status, (str, Status)) else list(status)
    statuses: set[Status] = set()
    for item in items:
        if item == ALL_STATUSES:
            statuses.update(Status)
            continue
        try:
            statuses.add(Status(item))
        except ValueError:
            raise ValueError(
                f"where(status=...) takes 'ok', 'failed', 'all' or a list of them, got {item!r}"
            ) from None
    return frozenset(statuses)
