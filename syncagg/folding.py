"""Folding results into an accumulator where they are computed.

With ``Combine(combiner, in_workers=True)`` a worker does not send the value
of each job. ``BatchFolder`` folds the values of the jobs of one batch into
one accumulator, and the batch carries that accumulator in
``ResultBatch.partials`` together with the job ids, timings and errors, so
the parent tracks done jobs, failures and checkpoints as usual. The values
column then contains ``None`` for each folded value, which pickles in one
byte and keeps the column indexes of ``errors`` valid.
"""

from __future__ import annotations

import traceback
from typing import Any

from syncagg.combiners import Combiner
from syncagg.stages import Rejection

__all__ = ["COMBINER_ERROR", "BatchFolder"]

# The error type of a job whose value the combiner could not fold. The
# collector turns it into a StrategyError, as it does when the combiner
# raises in the collector.
COMBINER_ERROR = "syncagg.CombinerError"


class BatchFolder:
    """Fold the successful values of one pending batch into one accumulator."""

    def __init__(self, combiner: Combiner) -> None:
        self.combiner = combiner
        self._accumulator = combiner.create()
        self._count = 0

    def add(self, value: Any) -> tuple[Any, tuple[str, str, str] | None]:
        """Fold one value and return what the values column keeps, with an error if any.

        A folded value becomes ``None``. A value that a pipeline stage in the
        worker rejected is kept as it is, so that the parent can count it.
        """
        if isinstance(value, Rejection):
            return value, None
        try:
            self._accumulator = self.combiner.add(self._accumulator, value)
        except Exception as exc:  # noqa: BLE001 - raised as StrategyError in the collector
            message = f"{type(exc).__name__}: {exc}"
            return None, (COMBINER_ERROR, message, traceback.format_exc())
        self._count += 1
        return None, None

    def take(self) -> list[Any]:
        """Return ``[accumulator]`` of the values folded since the last call, or ``[]``."""
        if not self._count:
            return []
        partial = self._accumulator
        self._accumulator = self.combiner.create()
        self._count = 0
        return [partial]
