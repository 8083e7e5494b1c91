"""The collector: turns result batches into strategy state and output rows.

Every method runs in the collector thread. ``add_batch`` is the hot path:
it works on whole batches, and builds one ``JobResult`` object per result
only for failed jobs and when a strategy, a hook or a stream needs them.
Without a pipeline, hooks, a stream or an ordered strategy, a batch takes
the plain path, which touches values only to hand them on.

With a pipeline, each batch goes through these steps: failed results are
kept and routed through the status checks; successful values pass the
stages (``pipeline.py``); rejected ones become counts and dead letters; the
strategy receives the values that passed (or the accumulators the workers
folded), then the outputs, then the hooks and the stream, in job order.
When the pipeline lets failed results reach the outputs, they are written
as rows in the same step as the successful ones (``statusrows.py``), so a
checkpoint covers both kinds at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from syncagg.deadletters import MAX_DEAD_LETTERS_KEPT, DeadLetter
from syncagg.dispatcher import Segment
from syncagg.errors import StrategyError
from syncagg.folding import COMBINER_ERROR
from syncagg.hooks import call_hook
from syncagg.jobranges import JobRanges
from syncagg.outputs.tables import split_rows, unwrap_encoded
from syncagg.outputs.writer import OutputWriter
from syncagg.pipeline import Pipeline, PipelineRun
from syncagg.progress import Progress
from syncagg.records import JobError, JobResult, Status
from syncagg.stages import DEAD_LETTER, Rejection
from syncagg.statusrows import failed_row, with_ok_status
from syncagg.strategies import Strategy
from syncagg.summary import rejected_key
from syncagg.transport import ResultBatch

__all__ = ["Collector", "Listeners"]

logger = logging.getLogger("syncagg.collector")

MAX_FAILURES_KEPT = 100

_FROM_BATCH: Any = object()

# Dead letters logged one by one at WARNING; later ones are logged at DEBUG.
_DEAD_LETTERS_LOGGED = 10
# Failed jobs logged one by one at WARNING; later ones are logged at DEBUG.
_FAILURES_LOGGED = 20


class ResultSink(Protocol):
    """The receiving end of ``Aggregator.stream`` (``streaming.Handoff``)."""

    def put(self, result: JobResult) -> None:
        """Hand one result to the consumer, waiting while the consumer is behind."""

    def wait_consumed(self) -> None:
        """Wait until the consumer has taken every result handed over."""


@dataclass
class Listeners:
    """The receivers of ``JobResult`` objects besides the strategy.

    Attributes
    ----------
    on_result, on_error : callable, optional
        The user's hooks for successful and failed results.
    stream : ResultSink, optional
        The hand-off to the consumer of ``Aggregator.stream``.
    """

    on_result: Callable[[JobResult], Any] | None = None
    on_error: Callable[[JobResult], Any] | None = None
    stream: ResultSink | None = None

    @property
    def active(self) -> bool:
        """Whether a hook or a stream receives results."""
        return self.on_result is not None or self.on_error is not None or self.stream is not None


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
        pipeline: Pipeline | None = None,
        worker_stages: int = 0,
        dead_letters: OutputWriter | None = None,
        listeners: Listeners | None = None,
    ) -> None:
        self.key = key
        self.strategy = strategy
        self.writers = list(writers)
        self.progress = progress
        self.done = done
        self.counts = {"ok": 0, "failed": 0, **(counts or {})}
        self.failures = list(failures or [])
        # The pipeline counts into self.counts, which checkpoints store.
        self.pipeline = None if pipeline is None else PipelineRun(pipeline, worker_stages, self.counts)
        self.writes_failed = pipeline is not None and pipeline.writes_failed()
        self.dead_letter_writer = dead_letters
        self.dead_letters: list[DeadLetter] = []
        self.listeners = listeners or Listeners()
        self._plain = pipeline is None and not self.listeners.active and not strategy.wants_skipped
        # Set by Aggregator(encode_in_workers=True): values may be EncodedTable.
        self.encoded_in_workers = False
        self._payloads: dict[int, dict[str, Any]] = {}
        self._dead_letters_seen = 0
        self._failures_seen = 0
        # Rows each output rejected in earlier runs of the same checkpoint.
        self._rejected_before = {
            key: self.counts.get(key, 0) for key in map(_rejected_key, self.writers)
        }

    @property
    def drops_values(self) -> bool:
        """Whether only the strategy receives values, and it keeps no reference to them.

        Values may then be views of shared memory that the worker reuses
        once they are gone. Writers, hooks, streams and pipeline stages may
        hold values for a while, so any of them rules this out.
        """
        return (
            self._plain
            and not self.writers
            and not self.encoded_in_workers
            and self.strategy.borrows_values
        )

    @property
    def every_writer(self) -> list[OutputWriter]:
        """The output writers and the dead-letter writer, which checkpoints commit together."""
        if self.dead_letter_writer is None:
            return list(self.writers)
        return [*self.writers, self.dead_letter_writer]

    def commit(self) -> dict[str, Any]:
        """Wait for the stream's consumer, commit every writer, and return their positions.

        A checkpoint stores only results that the consumer of a stream has
        taken, so a resume never skips a result that was never consumed.
        """
        if self.listeners.stream is not None:
            self.listeners.stream.wait_consumed()
        positions = {str(writer.output.path): writer.commit() for writer in self.every_writer}
        # A writer counts a rejected row once it has forwarded it, which its
        # commit does for every row before the position it returns.
        for writer in self.writers:
            key = _rejected_key(writer)
            self.counts[key] = self._rejected_before[key] + writer.rejected
        return positions

    def add_batch(self, batch: ResultBatch, segments: list[Segment]) -> None:
        """Collect one batch from a worker, waiting while an output queue or the stream is full.

        Raises ``StrategyError`` if the strategy's function raises,
        ``HookError`` if a hook raises and ``OutputError`` if a writer has failed.
        """
        if batch.errors:
            self._check_combiner_errors(batch, segments)
        if self.encoded_in_workers:
            # Tables that workers encoded for the outputs reach the strategy unwrapped.
            self._payloads = unwrap_encoded(batch.values)
        if self._plain:
            self._add_plain(batch, segments)
        else:
            self._add_routed(batch, segments)

        failed = len(batch.errors)
        self._mark_done(segments)
        self.counts["ok"] += len(batch) - failed
        self.progress.advance(len(batch), failed)

    def add_failures(self, failures: list[JobResult]) -> None:
        """Record jobs that failed outside a worker's batch, such as a worker's death."""
        for result in failures:
            self._keep_failure(result)
        if self.strategy.wants_skipped and failures:
            self._call_strategy(self.strategy.add_skipped, [result.job_id for result in failures])
        passed = [result for result in failures if self._failed_passes(result)]
        self._write_failed(passed)
        self._deliver(passed)
        self.done.update(result.job_id for result in failures)
        self.progress.advance(len(failures), len(failures))

    def _add_plain(self, batch: ResultBatch, segments: list[Segment]) -> None:
        if batch.errors:
            ok = [i for i in range(len(batch)) if i not in batch.errors]
            self._add_failed(batch, _jobs(segments))
        else:
            ok = None

        if batch.partials:
            self._call_strategy(self.strategy.add_partials, batch.partials)
            return
        values = batch.values if ok is None else [batch.values[i] for i in ok]
        if values:
            if self.strategy.wants_results:
                jobs = _jobs(segments)
                indexes = ok if ok is not None else range(len(batch))
                results = [self._result(batch, jobs, i) for i in indexes]
                self._call_strategy(self.strategy.add_results, results)
            else:
                self._call_strategy(self.strategy.add_values, values)
            self._write(values, _origin(self.key, batch, segments, ok))

    def _add_routed(self, batch: ResultBatch, segments: list[Segment]) -> None:
        jobs = _jobs(segments)
        failed = self._add_failed(batch, jobs)
        ok = [i for i in range(len(batch)) if i not in batch.errors]

        if self.pipeline is not None:
            passed, values, rejected = self.pipeline.apply(batch.values, ok)
            self._add_dead_letters(batch, jobs, rejected)
        else:
            passed, values, rejected = ok, [batch.values[i] for i in ok], []

        results = []
        if self.strategy.wants_results or self.listeners.active:
            pairs = zip(passed, values, strict=True)
            results = [self._result(batch, jobs, i, value) for i, value in pairs]
        self._apply_routed(batch, values, results, failed, rejected)

        origin = _origin(self.key, batch, segments, passed)
        failed_passed = [result for result in failed if self._failed_passes(result)]
        if self.writes_failed:
            self._write(with_ok_status(values, origin), origin)
            self._write_failed(failed_passed)
        else:
            self._write(values, origin)

        delivered = failed_passed + results
        delivered.sort(key=lambda result: result.job_id)
        self._deliver(delivered)

    def _apply_routed(
        self,
        batch: ResultBatch,
        values: list[Any],
        results: list[JobResult],
        failed: list[JobResult],
        rejected: list[tuple[int, Rejection]],
    ) -> None:
        strategy = self.strategy
        if batch.partials:
            self._call_strategy(strategy.add_partials, batch.partials)
        elif values and strategy.wants_results:
            self._call_strategy(strategy.add_results, results)
        elif values:
            self._call_strategy(strategy.add_values, values)

        if strategy.wants_skipped:
            skipped = [result.job_id for result in failed]
            skipped += [batch.job_ids[i] for i, _ in rejected]
            if skipped:
                self._call_strategy(strategy.add_skipped, skipped)

    def _call_strategy(self, method: Callable[[Any], None], argument: Any) -> None:
        try:
            method(argument)
        except Exception as exc:
            raise StrategyError(
                f"{self.strategy.describe()} raised {type(exc).__name__}: {exc}"
            ) from exc

    def _check_combiner_errors(self, batch: ResultBatch, segments: list[Segment]) -> None:
        """Raise ``StrategyError`` if a worker's combiner failed to fold a value."""
        for i, (kind, message, trace) in batch.errors.items():
            if kind != COMBINER_ERROR:
                continue
            item, _ = _jobs(segments)[i]
            error = StrategyError(
                f"{self.strategy.describe()} raised {message} in a worker, folding the value "
                f"of job {batch.job_ids[i]} ({self.key(item)})"
            )
            error.add_note(f"Traceback in the worker:\n{trace}")
            raise error

    def _write(self, values: list[Any], origin: Callable[[int], tuple[int, str]]) -> None:
        if not self.writers or not values:
            return
        for first, rows, table in split_rows(values):
            for writer in self.writers:
                if rows is not None:
                    writer.put(rows, _shifted(origin, first))
                else:
                    encoded = self._payloads.get(id(table), {}).get(str(writer.output.path))
                    writer.put_table(table, _fixed(origin, first), encoded)

    def _write_failed(self, failed: list[JobResult]) -> None:
        """Queue the rows of failed jobs that passed the pipeline, if the outputs take them."""
        if not self.writes_failed or not self.writers or not failed:
            return
        rows = [failed_row(result) for result in failed]
        jobs = [(result.job_id, result.key) for result in failed]
        for writer in self.writers:
            writer.put(rows, jobs.__getitem__)

    def _deliver(self, results: list[JobResult]) -> None:
        """Hand results to the hooks and the stream, in the order given."""
        listeners = self.listeners
        if not results or not listeners.active:
            return
        for result in results:
            if result.status is Status.OK:
                if listeners.on_result is not None:
                    call_hook("on_result", listeners.on_result, result)
            elif listeners.on_error is not None:
                call_hook("on_error", listeners.on_error, result)
            if listeners.stream is not None:
                listeners.stream.put(result)

    def _failed_passes(self, result: JobResult) -> bool:
        return self.pipeline is None or self.pipeline.allows_failed(result)

    def _add_failed(self, batch: ResultBatch, jobs: list[tuple[Any, int]]) -> list[JobResult]:
        failed = []
        for i in batch.errors:
            result = self._result(batch, jobs, i)
            self._keep_failure(result)
            failed.append(result)
        return failed

    def _keep_failure(self, result: JobResult) -> None:
        self._log_failure(result)
        self.counts["failed"] += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(result)

    def _log_failure(self, result: JobResult) -> None:
        self._failures_seen += 1
        seen = self._failures_seen
        level = logging.WARNING if seen <= _FAILURES_LOGGED else logging.DEBUG
        error = result.error
        reason = "unknown error" if error is None else f"{error.type}: {error.message}"
        logger.log(level, "job %d (%s) failed: %s", result.job_id, result.key, reason)
        if seen == _FAILURES_LOGGED:
            logger.warning(
                "logging further failed jobs at DEBUG only; the summary counts them all"
            )

    def _add_dead_letters(
        self, batch: ResultBatch, jobs: list[tuple[Any, int]], rejected: list[tuple[int, Rejection]]
    ) -> None:
        assert self.pipeline is not None
        rows = []
        for i, rejection in rejected:
            if rejection.outcome != DEAD_LETTER:
                continue
            letter = DeadLetter(
                job_id=batch.job_ids[i],
                key=self.key(jobs[i][0]),
                stage=self.pipeline.stages[rejection.stage].describe(),
                stage_index=rejection.stage,
                reason=rejection.reason,
                value=rejection.value,
            )
            self._log_dead_letter(letter)
            if len(self.dead_letters) < MAX_DEAD_LETTERS_KEPT:
                self.dead_letters.append(letter)
            rows.append(letter.to_row())
        if rows and self.dead_letter_writer is not None:
            self.dead_letter_writer.put(rows)

    def _log_dead_letter(self, letter: DeadLetter) -> None:
        self._dead_letters_seen += 1
        seen = self._dead_letters_seen
        level = logging.WARNING if seen <= _DEAD_LETTERS_LOGGED else logging.DEBUG
        logger.log(
            level, "dead letter: job %d (%s) at stage %s: %s", letter.job_id, letter.key, letter.stage, letter.reason
        )
        if seen == _DEAD_LETTERS_LOGGED:
            logger.warning("logging further dead letters at DEBUG only; the summary counts them all")

    def _mark_done(self, segments: list[Segment]) -> None:
        # Fresh chunks carry a range of ids, so a batch costs one range
        # update per chunk it spans instead of a pass over its ids.
        for segment in segments:
            ids = segment.chunk.job_ids[segment.start : segment.stop]
            if isinstance(ids, range):
                self.done.add_range(ids.start, ids.stop)
            else:
                self.done.update(ids)

    def _result(
        self, batch: ResultBatch, jobs: list[tuple[Any, int]], i: int, value: Any = _FROM_BATCH
    ) -> JobResult:
        item, attempts = jobs[i]
        error = batch.errors.get(i)
        # Positional arguments: one record per result, and keywords cost more.
        return JobResult(
            batch.job_ids[i],
            self.key(item),
            Status.OK if error is None else Status.FAILED,
            batch.values[i] if value is _FROM_BATCH else value,
            None if error is None else JobError(*error),
            batch.worker_pid,
            batch.started_at(i),
            batch.finished[i],
            attempts,
        )


def _origin(
    key: Callable[[Any], str], batch: ResultBatch, segments: list[Segment], indexes: Sequence[int] | None
) -> Callable[[int], tuple[int, str]]:
    """Return a lookup from a value's index in ``indexes`` to its job id and key.

    Writers call it only for rows they reject, so keys are computed only then.
    """

    jobs: list[tuple[Any, int]] = []

    def lookup(index: int) -> tuple[int, str]:
        position = index if indexes is None else indexes[index]
        if not jobs:
            jobs.extend(_jobs(segments))
        item, _ = jobs[position]
        return batch.job_ids[position], key(item)

    return lookup


def _rejected_key(writer: OutputWriter) -> str:
    return rejected_key(str(writer.output.path))


def _shifted(origin: Callable[[int], tuple[int, str]], first: int) -> Callable[[int], tuple[int, str]]:
    return origin if first == 0 else lambda index: origin(first + index)


def _fixed(origin: Callable[[int], tuple[int, str]], index: int) -> Callable[[int], tuple[int, str]]:
    # Every row of a table comes from the one job that returned the table.
    return lambda _: origin(index)


def _jobs(segments: list[Segment]) -> list[tuple[Any, int]]:
    """Return ``(input, attempts)`` for each result of a batch, in order."""
    jobs: list[tuple[Any, int]] = []
    for segment in segments:
        chunk = segment.chunk
        jobs.extend(zip(chunk.items[segment.start : segment.stop], chunk.attempts[segment.start : segment.stop], strict=True))
    return jobs
