"""What runs in the workers besides the user's function: pipeline stages and combining.

Before any worker starts, ``Aggregator`` gets from this module the combiner
the workers fold with and the pipeline stages they run, and checks that the
settings fit together.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

from syncagg.combiners import Combiner
from syncagg.outputs.base import Output
from syncagg.pipeline import Pipeline
from syncagg.stages import StagedFunction
from syncagg.strategies import Combine, Strategy

__all__ = ["check_settings", "check_worker_parts", "worker_combiner", "worker_function"]


def worker_combiner(strategy: Strategy) -> Combiner | None:
    """Return the combiner that workers fold with, or ``None`` if they send every value."""
    if isinstance(strategy, Combine) and strategy.in_workers:
        return strategy.combiner
    return None


def check_settings(
    strategy: Strategy,
    pipeline: Pipeline | None,
    outputs: Sequence[Output],
    on_result: Callable[[Any], Any] | None,
) -> None:
    """Raise ``ValueError`` for settings that cannot work together.

    Folding in the workers sends no per-job values, so nothing that needs
    them can run, and every stage that changes values must run before the
    fold, in the workers.
    """
    if pipeline is not None:
        pipeline.worker_stages()
    if worker_combiner(strategy) is None:
        return

    fix = f"or use {strategy.describe().replace(', in_workers=True', '')} to fold in the collector"
    if outputs:
        names = ", ".join(str(output.path) for output in outputs)
        raise ValueError(
            f"outputs ({names}) need one row per job, but {strategy.describe()} sends no per-job "
            f"values from the workers; drop the outputs {fix}"
        )
    if on_result is not None:
        raise ValueError(
            f"on_result needs each job's value, but {strategy.describe()} sends no per-job "
            f"values from the workers; drop on_result {fix}"
        )
    if pipeline is not None and pipeline.worker_stages() < len(pipeline.stages):
        stage = pipeline.stages[pipeline.worker_stages()]
        raise ValueError(
            f"pipeline stage {stage.describe()} runs in the collector, but {strategy.describe()} "
            f"folds values in the workers before they reach the collector; mark the stage "
            f"in_workers=True {fix}"
        )


def check_worker_parts(strategy: Strategy, pipeline: Pipeline | None) -> None:
    """Raise ``TypeError`` if the combiner or a worker stage cannot travel to worker processes."""
    combiner = worker_combiner(strategy)
    if combiner is not None:
        try:
            pickle.dumps(combiner)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same
            raise TypeError(
                f"{strategy.describe()} folds in worker processes, but {combiner.describe()} "
                f"cannot be pickled ({exc}); give it a field name or a function defined at the "
                "top level of a module"
            ) from None
    if pipeline is not None:
        pipeline.check_picklable()


def worker_function(fn: Callable[[Any], Any], pipeline: Pipeline | None) -> Callable[[Any], Any]:
    """Return ``fn``, or ``fn`` followed by the pipeline stages that run in the workers."""
    if pipeline is None:
        return fn
    count = pipeline.worker_stages()
    if count == 0:
        return fn
    return StagedFunction(fn, pipeline.stages[:count])
