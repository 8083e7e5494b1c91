"""Pipelines: stages that each result passes before the strategy and the outputs.

``Aggregator(pipeline=...)`` runs the stages in the collector thread, or in
the workers for stages marked ``in_workers`` (processes, threads and
executors alike), which then send back only a small ``Rejection`` for a
result that a stage stopped. Each result that enters a stage has one outcome
there: passed, filtered out, or dead letter. A dead letter goes to the
dead-letter output with the job id, the key, the stage and the reason. No
result is dropped silently, because the run summary counts every outcome.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from syncagg.normalizing import Normalizer
from syncagg.records import JobResult, Status
from syncagg.schema import as_schema
from syncagg.stages import (
    DEAD_LETTER,
    FILTERED_OUT,
    PASSED,
    Map,
    Normalize,
    Rejection,
    Stage,
    Validate,
    Where,
    run_stages,
)

__all__ = ["Pipeline", "PipelineRun", "StageCounts", "split_counts"]

logger = logging.getLogger("syncagg.pipeline")

# Keys of the per-stage counts in the collector's counts, which checkpoints store.
_STAGE_PREFIX = "pipeline."
_OUTCOMES = (PASSED, FILTERED_OUT, DEAD_LETTER)


class Pipeline:
    """Stages that results pass through before the strategy, outputs, hooks and stream.

    Each method returns a new pipeline with one more stage, so pipelines
    can be built in steps and shared. Successful results pass through every
    stage in order. Failed results carry no value, so they pass only
    through ``where`` stages that have a ``status``, which can filter them
    out. They are counted in the summary's failures either way.

    Outputs receive failed results only when a ``where`` stage names the
    failed status, as in ``where(status="all")`` (see ``writes_failed``).
    Then each failed job becomes a row with the columns ``job_id``,
    ``key``, ``status`` (``"failed"``), ``error_type`` and
    ``error_message``, and every successful row gets ``status`` ``"ok"``.

    Parameters
    ----------
    in_workers : bool, default False
        Run the stages in the workers unless a stage says otherwise. Stages
        in the workers must come before the stages in the collector, since
        stages run in order.

    Examples
    --------
    >>> pipeline = (
    ...     Pipeline()
    ...     .where(status="ok")
    ...     .map(lambda row: {**row, "kib": row["bytes"] / 1024})
    ...     .validate({"path": str, "kib": float})
    ... )
    >>> len(pipeline.stages)
    3
    """

    def __init__(self, in_workers: bool = False) -> None:
        self.in_workers = bool(in_workers)
        self.stages: tuple[Stage, ...] = ()

    def where(
        self,
        predicate: Callable[[Any], Any] | None = None,
        *,
        status: str | Status | Iterable[str | Status] | None = None,
        in_workers: bool | None = None,
    ) -> Pipeline:
        """Pass results whose value makes ``predicate`` true and whose status is in ``status``.

        Others are filtered out: counted, but not dead letters. ``status``
        is ``"ok"``, ``"failed"``, ``"all"`` or a list of them; ``predicate``
        receives the value of a successful result and is not called for
        failed ones. A predicate that raises makes the result a dead letter.
        A status that includes ``"failed"`` also sends failed results to the
        outputs, as rows with a ``status`` column.
        """
        return self._with(Where(predicate, status, in_workers))

    def map(self, fn: Callable[[Any], Any], *, in_workers: bool | None = None) -> Pipeline:
        """Replace each value with ``fn(value)``; a raise makes the result a dead letter."""
        return self._with(Map(fn, in_workers))

    def validate(self, schema: Any, *, in_workers: bool | None = None) -> Pipeline:
        """Check each value against a schema; a mismatch makes the result a dead letter.

        ``schema`` is a ``syncagg.Schema``, a dict of field name to type
        (``{"path": str, "note": (str, None)}``) or a ``pyarrow.Schema``.
        """
        return self._with(Validate(as_schema(schema), in_workers))

    def normalize(
        self,
        *,
        numpy: bool = True,
        datetimes: str = "keep",
        nan: str = "keep",
        in_workers: bool | None = None,
    ) -> Pipeline:
        """Convert numpy scalars to Python values, datetimes to UTC or text, and NaN.

        ``datetimes`` is ``"keep"``, ``"utc"`` or ``"iso"``; ``nan`` is
        ``"keep"``, ``"null"`` (NaN becomes ``None``) or ``"dead_letter"``.
        See ``syncagg.normalizing.Normalizer``.
        """
        return self._with(Normalize(Normalizer(numpy, datetimes, nan), in_workers))

    def writes_failed(self) -> bool:
        """Return whether outputs receive failed results.

        True when at least one ``where`` stage sets a status and every such
        stage lets failed results pass. A pipeline without a status keeps
        outputs to successful rows, as a run without a pipeline does.
        """
        statuses = [stage for stage in self.stages if isinstance(stage, Where) and stage.statuses is not None]
        return bool(statuses) and all(stage.allows(Status.FAILED) for stage in statuses)

    def runs_in_workers(self, stage: Stage) -> bool:
        """Return True if ``stage`` runs in the workers."""
        return self.in_workers if stage.in_workers is None else stage.in_workers

    def worker_stages(self) -> int:
        """Return how many leading stages run in the workers.

        Raises ``ValueError`` if a stage marked for the workers follows one
        that runs in the collector.
        """
        count = 0
        for index, stage in enumerate(self.stages):
            if not self.runs_in_workers(stage):
                continue
            if index != count:
                earlier = self.stages[count]
                raise ValueError(
                    f"pipeline stage {index} {stage.describe()} runs in the workers but follows "
                    f"stage {count} {earlier.describe()}, which runs in the collector; stages run "
                    "in order, so mark the earlier stages in_workers=True too, or move this one before them"
                )
            count += 1
        return count

    def check_picklable(self) -> None:
        """Raise ``TypeError`` if a stage that runs in the workers cannot be pickled."""
        for index, stage in enumerate(self.stages):
            if not self.runs_in_workers(stage):
                continue
            for fn in stage.callables():
                try:
                    pickle.dumps(fn)
                except Exception as exc:  # noqa: BLE001 - any pickling failure means the same
                    raise TypeError(
                        f"pipeline stage {index} {stage.describe()} runs in worker processes, "
                        f"but its function cannot be pickled ({exc}); define it at the top level "
                        "of a module, or run the stage in the collector with in_workers=False"
                    ) from None

    def describe(self) -> str:
        """Return the stages as text; part of a checkpoint's fingerprint."""
        parts = []
        for stage in self.stages:
            where = " in workers" if self.runs_in_workers(stage) else ""
            parts.append(stage.describe() + where)
        return " | ".join(parts)

    def __repr__(self) -> str:
        return f"Pipeline({self.describe()})"

    def _with(self, stage: Stage) -> Pipeline:
        pipeline = Pipeline(self.in_workers)
        pipeline.stages = (*self.stages, stage)
        return pipeline


class StageCounts(NamedTuple):
    """The outcome counts of the results that entered one pipeline stage."""

    stage: str
    passed: int
    filtered_out: int
    dead_letter: int


class PipelineRun:
    """Apply a pipeline's collector stages and count every outcome.

    ``counts`` is the collector's counts dict, which checkpoints store, so
    the counts of a resumed run go on from where they were.
    """

    def __init__(self, pipeline: Pipeline, worker_stages: int, counts: dict[str, int]) -> None:
        self.stages = pipeline.stages
        self._local = pipeline.stages[worker_stages:]
        self._first_local = worker_stages
        self.counts = counts
        for outcome in _OUTCOMES:
            counts.setdefault(outcome, 0)
            for index in range(len(self.stages)):
                counts.setdefault(_key(index, outcome), 0)

    def apply(
        self, values: Sequence[Any], indexes: Iterable[int]
    ) -> tuple[list[int], list[Any], list[tuple[int, Rejection]]]:
        """Pass the successful values at ``indexes`` through the stages.

        A value may already be a ``Rejection`` from the worker's stages.
        Returns the indexes that passed, their new values, and the rejected
        indexes with their rejections.
        """
        passed: list[int] = []
        passed_values: list[Any] = []
        rejected: list[tuple[int, Rejection]] = []
        local, first = self._local, self._first_local
        for index in indexes:
            value = values[index]
            if local and not isinstance(value, Rejection):
                value = run_stages(local, first, value)
            if isinstance(value, Rejection):
                rejected.append((index, value))
            else:
                passed.append(index)
                passed_values.append(value)

        self._count(len(passed), [rejection for _, rejection in rejected])
        return passed, passed_values, rejected

    def allows_failed(self, result: JobResult) -> bool:
        """Pass a failed result through the status checks; count and return whether it passed."""
        counts = self.counts
        for index, stage in enumerate(self.stages):
            if not isinstance(stage, Where) or stage.statuses is None:
                continue
            if not stage.allows(result.status):
                counts[_key(index, FILTERED_OUT)] += 1
                counts[FILTERED_OUT] += 1
                return False
            counts[_key(index, PASSED)] += 1
        counts[PASSED] += 1
        return True

    def _count(self, passed: int, rejections: list[Rejection]) -> None:
        counts = self.counts
        counts[PASSED] += passed
        for index in range(len(self.stages)):
            counts[_key(index, PASSED)] += passed
        for rejection in rejections:
            for index in range(rejection.stage):
                counts[_key(index, PASSED)] += 1
            counts[_key(rejection.stage, rejection.outcome)] += 1
            counts[rejection.outcome] += 1


def split_counts(
    counts: Mapping[str, int], stages: Sequence[Stage]
) -> tuple[dict[str, int], tuple[StageCounts, ...]]:
    """Split the collector's counts into the summary's counts and per-stage counts."""
    plain = {name: count for name, count in counts.items() if not name.startswith(_STAGE_PREFIX)}
    per_stage = tuple(
        StageCounts(stage.describe(), *(counts.get(_key(index, outcome), 0) for outcome in _OUTCOMES))
        for index, stage in enumerate(stages)
    )
    return plain, per_stage


def _key(index: int, outcome: str) -> str:
    return f"{_STAGE_PREFIX}{index}.{outcome}"
