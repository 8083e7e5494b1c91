"""The collector: turns result batches into strategy state and output rows.

Every method runs in the collector thread. ``add_batch`` is the hot path:
it works on whole batches, and builds one ``JobResult`` object per result
only for failed jobs and for strategies that ask for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from syncagg.dispatcher import Segment
from syncagg.errors import StrategyError
from syncagg.jobranges import JobRanges
from syncagg.outputs.writer import OutputWriter
from syncagg.progress import Progress
from syncagg.records import JobError, JobResult, Status
from syncagg.strategies import Strategy
from syncagg.transport import ResultBatch

__all__ = ["Collector"]

logger = logging.getLogger("syncagg.collector")

MAX_FAILURES_KEPT = 100


class Collector:
    """Apply one strategy and feed every output, counting what happens to each job."""

    def __init__(
        self,
        key: Callable[[Any], str],
        strategy: Strategy,
        writers: Sequence[OutputWriter],
        progress: Progress,
        done: JobRanges,
        counts: dict[str, int] | None = None,
        failures: list[JobResult] | None = None,
    ) -> None:
        self.key = key
        self.strategy = strategy
        self.writers = list(writers)
        self.progress = progress
        self.done = done
        self.counts = {"ok": 0, "failed": 0, **(counts or {})}
        self.failures = list(failures or [])

    def add_batch(self, batch: ResultBatch, segments: list[Segment]) -> None:
        """Collect one batch from a worker; blocks while an output queue is full.

        Raises ``StrategyError`` if the strategy's function raises and
        ``OutputError`` if a writer has failed.
        """
        if batch.errors:
            ok = [i for i in range(len(batch)) if i not in batch.errors]
            values = [batch.values[i] for i in ok]
            self._add_failed(batch, segments)
        else:
            ok = None
            values = batch.values

        if values:
            self._apply_strategy(batch, segments, ok, values)
            self._write(values)

        self._mark_done(batch.job_ids)
        self.counts["ok"] += len(values)
        self.progress.advance(len(batch), len(batch.errors))

    def add_failures(self, failures: list[JobResult]) -> None:
        """Record jobs that failed outside a worker's batch, such as a worker's death."""
        for result in failures:
            self._keep_failure(result)
        self.done.update(result.job_id for result in failures)
        self.progress.advance(len(failures), len(failures))

    def _mark_done(self, job_ids: list[int]) -> None:
        # Ids in a batch are distinct, so a span as wide as the batch is a range.
        low, high = min(job_ids), max(job_ids)
        if high - low + 1 == len(job_ids):
            self.done.add_range(low, high + 1)
        else:
            self.done.update(job_ids)

    def _apply_strategy(
        self, batch: ResultBatch, segments: list[Segment], ok: list[int] | None, values: list[Any]
    ) -> None:
        strategy = self.strategy
        try:
            if strategy.wants_results:
                jobs = _jobs(segments)
                indexes = ok if ok is not None else range(len(batch))
                strategy.add_results([self._result(batch, jobs, i) for i in indexes])
            else:
                strategy.add_values(values)
        except Exception as exc:
            raise StrategyError(
                f"{strategy.describe()} raised {type(exc).__name__}: {exc}"
            ) from exc

    def _write(self, values: list[Any]) -> None:
        if not self.writers:
            return
        rows = [value if isinstance(value, dict) else {"value": value} for value in values]
        for writer in self.writers:
            writer.put(rows)

    def _add_failed(self, batch: ResultBatch, segments: list[Segment]) -> None:
        jobs = _jobs(segments)
        for i in batch.errors:
            result = self._result(batch, jobs, i)
            self._keep_failure(result)
            assert result.error is not None
            logger.debug("job %d (%s) failed: %s", result.job_id, result.key, result.error.message)

    def _keep_failure(self, result: JobResult) -> None:
        self.counts["failed"] += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(result)


    def _result(self, batch: ResultBatch, jobs: list[tuple[Any, int]], i: int) -> JobResult:
        item, attempts = jobs[i]
        error = batch.errors.get(i)
        return JobResult(
            job_id=batch.job_ids[i],
            key=self.key(item),
            status=Status.OK if error is None else Status.FAILED,
            value=batch.values[i],
            error=None if error is None else JobError(*error),
            worker_pid=batch.worker_pid,
            started=batch.started[i],
            finished=batch.finished[i],
            attempts=attempts,
        )


def _jobs(segments: list[Segment]) -> list[tuple[Any, int]]:
    """Return ``(input, attempts)`` for each result of a batch, in order."""
    jobs: list[tuple[Any, int]] = []
    for segment in segments:
        chunk = segment.chunk
        jobs.extend(zip(chunk.items[segment.start : segment.stop], chunk.attempts[segment.start : segment.stop]))
    return jobs
