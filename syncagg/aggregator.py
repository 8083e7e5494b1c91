"""The public entry point: ``Aggregator`` and its ``run`` method."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncagg.checkpoint import Checkpoint, CheckpointState
from syncagg.collector import Collector, Listeners
from syncagg.dask_source import DaskSource, dask_client
from syncagg.deadletters import dead_letter_output
from syncagg.dispatcher import Dispatcher, default_key
from syncagg.errors import CheckpointError, InputError
from syncagg.executors import ExecutorSource, FutureSource, Threads
from syncagg.exitstop import stopped_at_exit
from syncagg.hooks import check_hook
from syncagg.interrupts import Termination, handling_sigterm, wait_for
from syncagg.memory import MemoryBudget, PeakMemory, format_bytes, parse_memory
from syncagg.names import qualified_name
from syncagg.outputs.base import Output
from syncagg.outputs.tables import table_encoder
from syncagg.outputs.writer import OutputWriter
from syncagg.pipeline import Pipeline, split_counts
from syncagg.pool import WorkerPool, check_picklable
from syncagg.processes import ProcessSource
from syncagg.progress import Progress
from syncagg.records import JobResult
from syncagg.runner import RunLoop
from syncagg.segments import purge_stale_segments
from syncagg.settings import (
    as_executor,
    as_output,
    check_dead_letter_outputs,
    check_distinct,
    check_folder,
    default_workers,
    describe_inputs,
    non_negative_int,
    positive_float,
    positive_int,
)
from syncagg.source import Source
from syncagg.stages import Stage
from syncagg.statusrows import check_outputs
from syncagg.strategies import Collect, Strategy
from syncagg.streaming import Handoff, ResultStream
from syncagg.summary import RunSummary, split_rejected
from syncagg.worker_side import (
    check_settings,
    check_worker_parts,
    worker_combiner,
    worker_function,
)

__all__ = ["Aggregator"]

logger = logging.getLogger("syncagg.aggregator")

_MiB = 1024 * 1024
_START_METHODS = ("fork", "forkserver", "spawn")


@dataclass(frozen=True)
class _Extras:
    """Settings of one call that are not the aggregator's own."""

    # Pipeline stages that the source runs where the jobs run.
    worker_stages: int = 0
    # Aggregator.stream's hand-off to the consumer, the event that stops the
    # run, and the SIGTERM handler that the stream installed in the caller's thread.
    stream: Handoff | None = None
    stop: threading.Event | None = None
    termination: Termination | None = None


class Aggregator:
    """Run a function over many inputs in worker processes and aggregate the results.

    Parameters
    ----------
    strategy : Strategy, default Collect()
        What to do with each successful result: ``Collect``, ``Combine``,
        ``Merge``, ``Reduce`` or ``Stream``.
    outputs : sequence of Output or path, default ()
        Files that receive one row per successful job, or each row of a
        ``pyarrow.RecordBatch`` or ``Table`` that a job returns. A path
        picks the format from its suffix (``.jsonl``, ``.json``, ``.csv``,
        ``.parquet``, ``.arrow``, or a plugin's; see ``docs/outputs.md``).
        With a ``pipeline`` whose ``where`` stage lets failed results pass,
        such as ``where(status="all")``, they also receive one row per
        failed job, and every row has a ``status`` column (see ``Pipeline``).
    checkpoint : path, optional
        SQLite file that records progress. Running the same configuration
        again resumes from it; a finished run is not repeated.
    workers : int or Threads, optional
        Worker processes; by default the number of CPUs this process may
        use. ``Threads(n)`` runs jobs in ``n`` threads of this process
        instead, for functions that wait on I/O. With ``executor``, the
        number of the executor's workers (chunks in flight are twice that);
        with a Dask client, the total threads of the cluster's workers.
    executor : concurrent.futures.Executor, optional
        Run jobs through an executor the caller owns, such as a
        ``ProcessPoolExecutor`` or Dask's ``Client.get_executor()`` (a Dask
        ``Client`` is accepted too; see ``docs/dask.md``). The caller shuts
        it down.
    progress : bool, default True
        Show a tqdm progress bar on standard error. When standard error is
        not a terminal, log one INFO line on the ``syncagg`` logger every
        ``progress_interval`` seconds instead.
    key : callable, optional
        ``key(input) -> str`` names an input in records and errors; by
        default the input itself for strings and paths, else its ``repr``.
    retries : int, default 1
        How many more times a job runs after its worker died while running
        it. An exception raised by the function is not retried.
    chunksize : int, optional
        Inputs sent to a worker at once; by default adapted so a chunk
        holds about 50 ms of work.
    ring_size : int, default 64 MiB
        Bytes of shared memory for results, split evenly between workers.
        A result larger than a worker's share travels in a segment of its own.
    batch_bytes : int, default 1 MiB
        A worker sends its pending results once they reach about this size.
    batch_latency : float, default 0.05
        ...or once the oldest pending result has waited this many seconds.
    checkpoint_seconds : float, default 30.0
        Seconds between checkpoints.
    checkpoint_results : int, default 100000
        Results between checkpoints, whichever comes first.
    queue_size : int, default 16
        Batches of rows each output's writer queue holds before the
        collector waits for the writer.
    start_method : {"fork", "forkserver", "spawn"}, optional
        The multiprocessing start method; by default Python's default.
    timeout : float, optional
        Seconds a job may run in a worker process. The worker of a job that
        runs longer is killed and replaced; the job is retried like one whose
        worker died, then failed with the error type ``syncagg.Timeout``.
        Only for worker processes, not with ``Threads`` or ``executor``.
    stop_timeout : float, default 10.0
        Seconds that jobs in flight get to finish after Ctrl-C or SIGTERM
        before the workers are stopped and the last checkpoint is written.
        A second Ctrl-C or SIGTERM stops them at once.
    max_memory : int or str, optional
        Memory budget of the parent and its worker processes together: bytes,
        or a string such as ``"4GiB"`` or ``"512MiB"``. Above 90% of it, new
        jobs wait until those in flight are collected, and a WARNING is
        logged. With ``Collect``, usage above the budget raises
        ``MemoryLimitError``.
    progress_interval : float, default 10.0
        Seconds between progress log lines when standard error is not a terminal.
    pipeline : Pipeline, optional
        Stages that each result passes before the strategy, the outputs, the
        hooks and ``stream``: ``where``, ``map``, ``validate``, ``normalize``.
        Stages marked ``in_workers`` run where the jobs run.
    dead_letters : path or Output, optional
        Where results that a pipeline stage rejected are written, with the
        job id, key, stage and reason: JSON Lines unless the suffix is
        ``.csv`` or ``.parquet``. Without it, the summary keeps the first 100.
        Rows that an output with ``invalid="dead_letter"`` rejects go there
        too, with the stage ``"output PATH"``.
    encode_in_workers : bool, default False
        When a job returns a ``pyarrow.RecordBatch`` or ``Table``, encode it
        for the JSON Lines, JSON and CSV outputs in the worker, so the
        parent only appends the bytes. Costs worker time for every such
        output, and pays when the parent is the bottleneck.
    on_result, on_error : callable, optional
        ``hook(JobResult)``, called in the collector thread for each
        successful or failed result that passed the pipeline. A hook that
        raises stops the run with ``HookError``.
    """

    def __init__(
        self,
        strategy: Strategy | None = None,
        outputs: Sequence[Output | str | os.PathLike[str]] = (),
        checkpoint: str | os.PathLike[str] | None = None,
        workers: int | Threads | None = None,
        executor: Executor | Any | None = None,
        progress: bool = True,
        key: Callable[[Any], str] = default_key,
        retries: int = 1,
        chunksize: int | None = None,
        ring_size: int = 64 * _MiB,
        batch_bytes: int = _MiB,
        batch_latency: float = 0.05,
        checkpoint_seconds: float = 30.0,
        checkpoint_results: int = 100_000,
        queue_size: int = 16,
        start_method: str | None = None,
        timeout: float | None = None,
        stop_timeout: float = 10.0,
        max_memory: int | str | None = None,
        progress_interval: float = 10.0,
        pipeline: Pipeline | None = None,
        dead_letters: Output | str | os.PathLike[str] | None = None,
        on_result: Callable[[JobResult], Any] | None = None,
        on_error: Callable[[JobResult], Any] | None = None,
        encode_in_workers: bool = False,
    ) -> None:
        self.strategy = strategy if strategy is not None else Collect()
        if not isinstance(self.strategy, Strategy):
            raise TypeError(
                f"strategy must be a syncagg strategy such as Collect() or Reduce(fn, initial), "
                f"got {strategy!r} of type {type(strategy).__qualname__}"
            )
        if isinstance(outputs, (str, os.PathLike, Output)):
            raise TypeError(
                f"outputs must be a list of outputs or paths, got {outputs!r}; "
                f"write outputs=[{outputs!r}]"
            )
        self.outputs = [as_output(output) for output in outputs]
        check_distinct(self.outputs)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.threads = workers if isinstance(workers, Threads) else None
        self.executor = as_executor(executor)
        if self.threads is not None and self.executor is not None:
            raise ValueError("pass either workers=Threads(n) or executor=..., not both")
        if self.threads is not None:
            self.workers = self.threads.count
        elif workers is not None:
            self.workers = positive_int("workers", workers)
        else:
            self.workers = default_workers(self.executor)
        self.progress = bool(progress)
        if not callable(key):
            raise TypeError(
                f"key must be a callable that returns a str for an input, got {key!r}; "
                "for a dict field use key=operator.itemgetter(name)"
            )
        self.key = key
        self.retries = non_negative_int("retries", retries)
        self.chunksize = None if chunksize is None else positive_int("chunksize", chunksize)
        self.ring_size = positive_int("ring_size", ring_size)
        self.batch_bytes = positive_int("batch_bytes", batch_bytes)
        self.batch_latency = positive_float("batch_latency", batch_latency)
        self.checkpoint_seconds = positive_float("checkpoint_seconds", checkpoint_seconds)
        self.checkpoint_results = positive_int("checkpoint_results", checkpoint_results)
        self.queue_size = positive_int("queue_size", queue_size)
        if start_method is not None and start_method not in _START_METHODS:
            raise ValueError(f"start_method must be one of {_START_METHODS} or None, got {start_method!r}")
        self.start_method = start_method
        self.timeout = None if timeout is None else positive_float("timeout", timeout)
        self.stop_timeout = positive_float("stop_timeout", stop_timeout)
        if self.timeout is not None and (self.threads is not None or self.executor is not None):
            raise ValueError(
                "timeout works with worker processes only, because a thread or an executor's "
                "job cannot be stopped; drop workers=Threads(n) or executor=..., or drop timeout"
            )
        self.max_memory = None if max_memory is None else parse_memory(max_memory)
        self.progress_interval = positive_float("progress_interval", progress_interval)
        if pipeline is not None and not isinstance(pipeline, Pipeline):
            raise TypeError(
                f"pipeline must be a syncagg.Pipeline, got {pipeline!r} of type {type(pipeline).__qualname__}"
            )
        self.pipeline = pipeline
        self.dead_letters = None if dead_letters is None else dead_letter_output(dead_letters)
        self.on_result = check_hook("on_result", on_result)
        self.on_error = check_hook("on_error", on_error)
        check_settings(self.strategy, self.pipeline, self.outputs, self.on_result)
        if self.pipeline is not None and self.pipeline.writes_failed():
            check_outputs(self.outputs)
        if self.dead_letters is not None:
            check_distinct([*self.outputs, self.dead_letters])
        check_dead_letter_outputs(self.outputs, self.dead_letters)
        self.encode_in_workers = bool(encode_in_workers)

        region = self.ring_size // self.workers
        if self.threads is None and self.executor is None and region < _MiB:
            raise ValueError(
                f"ring_size={self.ring_size} gives each of the {self.workers} workers "
                f"{region} bytes; give each worker at least 1 MiB (ring_size >= {self.workers * _MiB})"
            )

    def run(self, fn: Callable[[Any], Any], inputs: Iterable[Any]) -> RunSummary:
        """Run ``fn`` on every input and return the summary once all are done.

        Inputs are read lazily, with a bounded number of jobs in flight. An
        exception in ``fn`` makes that job a failed record and the run goes
        on. Blocks until the run completes.

        Raises
        ------
        InputError
            The input iterable raised. Jobs read before it are collected and
            checkpointed; the outputs stay partial.
        StrategyError, OutputError, CheckpointError, WorkerStartError
            The run stopped. With a checkpoint, the last checkpoint stands and
            the same call resumes from it; without one, partial files are removed.
        KeyboardInterrupt
            On Ctrl-C: workers stop, a last checkpoint is written, and the
            interrupt is raised again.
        SystemExit
            With code 143 on SIGTERM, after the same steps as for Ctrl-C.
        """
        if self.threads is None and self.executor is None:
            check_picklable(fn)
            check_worker_parts(self.strategy, self.pipeline)
        stages = self._worker_stages()
        return handling_sigterm(
            lambda termination: self._execute(
                qualified_name(fn), lambda: self._source(fn), inputs, self.chunksize, _Extras(stages, termination=termination)
            )
        )

    def stream(
        self,
        fn: Callable[[Any], Any],
        inputs: Iterable[Any],
        buffer_size: int = 1000,
        buffer_bytes: int = 64 * _MiB,
    ) -> ResultStream:
        """Run ``fn`` on every input and return an iterator of ``JobResult`` as they arrive.

        The run goes on in background threads while the caller iterates.
        Successful and failed results are both yielded, after the pipeline.
        The strategy, outputs, hooks and checkpoints work as in ``run``, and
        after the last result ``stream.summary`` is the ``RunSummary``.
        At most ``buffer_size`` results, and beyond the first at most
        ``buffer_bytes`` of them (estimated), wait for the caller; a slow caller
        makes the collector and then the workers wait.

        Leaving the loop early (``break``, an exception, ``close()``, or a
        ``with`` block around the stream) stops the run and waits until its
        threads and processes end. With a checkpoint, the results after the
        last checkpoint are delivered again on the next call: a checkpoint
        records only results that the caller has taken. An error that stops
        the run is raised from the loop, after the results before it.

        A stream created in the main thread handles SIGTERM as ``run`` does:
        the jobs in flight finish and reach the loop, a last checkpoint is
        written once the loop has taken them, and then the loop raises
        ``SystemExit(143)``.

        Raises
        ------
        ValueError
            With ``Combine(..., in_workers=True)``, which sends no per-job values.
        """
        combiner = worker_combiner(self.strategy)
        if combiner is not None:
            raise ValueError(
                f"stream() yields each job's value, but {self.strategy.describe()} sends no per-job "
                "values from the workers; use run(), or fold in the collector with in_workers=False"
            )
        buffer_size = positive_int("buffer_size", buffer_size)
        buffer_bytes = positive_int("buffer_bytes", buffer_bytes)
        if self.threads is None and self.executor is None:
            check_picklable(fn)
            check_worker_parts(self.strategy, self.pipeline)

        def start(handoff: Handoff, stop: threading.Event, termination: Termination) -> RunSummary:
            extras = _Extras(self._worker_stages(), handoff, stop, termination)
            return self._execute(qualified_name(fn), lambda: self._source(fn), inputs, self.chunksize, extras)

        return ResultStream(start, buffer_size, buffer_bytes)

    def collect(self, futures: Iterable[Future[Any]]) -> RunSummary:
        """Aggregate futures from an executor the caller owns, as they complete.

        Each future is one job, numbered in the order ``futures`` yields
        them; its result is the job's value and its exception a failed job.
        Strategies, outputs, checkpoints and progress work as in ``run``;
        on a resume, futures of jobs done earlier are skipped. Raises what
        ``run`` raises.
        """
        slots = self.workers * 2
        # There are no workers, so every pipeline stage runs in the collector.
        return handling_sigterm(
            lambda termination: self._execute(
                "concurrent.futures", lambda: FutureSource(slots), futures, 1, _Extras(termination=termination)
            )
        )

    def _worker_stages(self) -> int:
        return 0 if self.pipeline is None else self.pipeline.worker_stages()

    def _source(self, user_fn: Callable[[Any], Any]) -> Source:
        fn = worker_function(user_fn, self.pipeline)
        if self.encode_in_workers:
            fn = table_encoder(fn, self.outputs)
        combiner = worker_combiner(self.strategy)
        if self.threads is not None:
            return ExecutorSource.threads(self.threads, fn, combiner)
        if self.executor is not None and dask_client(self.executor) is not None:
            return DaskSource.from_executor(self.executor, fn, slots=self.workers * 2, combiner=combiner)
        if self.executor is not None:
            return ExecutorSource(self.executor, fn, slots=self.workers * 2, owned=False, combiner=combiner)

        context = multiprocessing.get_context(self.start_method)
        region = self.ring_size // self.workers
        pool = WorkerPool(
            fn, self.workers, region, self.batch_bytes, self.batch_latency, context, combiner=combiner
        )
        return ProcessSource(pool, self.timeout)

    def _execute(
        self,
        function: str,
        make_source: Callable[[], Source],
        inputs: Iterable[Any],
        chunksize: int | None,
        extras: _Extras,
    ) -> RunSummary:
        began = time.perf_counter()
        if extras.stop is None:
            extras = dataclasses.replace(extras, stop=threading.Event())
        assert extras.stop is not None
        with stopped_at_exit(extras.stop) as exiting:
            checkpoint = self._open_checkpoint(function, inputs)
            try:
                state = checkpoint.load() if checkpoint else None
                if state is not None and state.status == "finished":
                    logger.info("checkpoint %s records a finished run; nothing to do", self.checkpoint)
                    summary = self._finished_summary(state, began)
                else:
                    summary = self._run(
                        make_source, inputs, chunksize, checkpoint, state or CheckpointState(), began, extras
                    )
            finally:
                if checkpoint is not None:
                    checkpoint.close()
        if exiting.is_set():
            # The thread of this call ends here, quietly, instead of acting on part of the results.
            raise SystemExit(0)
        return summary

    def _restore_strategy(self, saved: Any) -> None:
        """Restore the strategy from a checkpoint; ``CheckpointError`` if the state does not fit."""
        try:
            self.strategy.restore(saved)
        except Exception as exc:  # noqa: BLE001 - any error means the stored state does not fit
            raise CheckpointError(
                f"checkpoint {str(self.checkpoint)!r} has a strategy state that "
                f"{self.strategy.describe()} cannot restore ({type(exc).__name__}: {exc}); the file "
                "is damaged or comes from another strategy, so delete it to start afresh"
            ) from exc

    def _run(
        self,
        make_source: Callable[[], Source],
        inputs: Iterable[Any],
        chunksize: int | None,
        checkpoint: Checkpoint | None,
        state: CheckpointState,
        began: float,
        extras: _Extras,
    ) -> RunSummary:
        purge_stale_segments()
        resumed = len(state.done)
        self.strategy.reset()
        if resumed:
            self._restore_strategy(state.strategy)

        total = len(inputs) if hasattr(inputs, "__len__") else None  # type: ignore[arg-type]
        progress = Progress(
            self.progress, total, resumed, state.counts.get("failed", 0), self.progress_interval
        )
        memory = PeakMemory()
        budget = None
        if self.max_memory is not None:
            budget = MemoryBudget(self.max_memory, collecting=isinstance(self.strategy, Collect))
        self._log_start(total, resumed)
        writers: list[OutputWriter] = []
        dead_letters: list[OutputWriter] = []
        source: Source | None = None
        loop: RunLoop | None = None
        try:
            writers = self._open_writers(state, self.outputs)
            if self.dead_letters is not None:
                dead_letters = self._open_writers(state, [self.dead_letters])
            source = make_source()
            dispatcher = Dispatcher(inputs, source.slots, state.done, self.key, chunksize, self.retries, total)
            collector = Collector(
                self.key, self.strategy, writers, progress, state.done, state.counts, state.failures,
                pipeline=self.pipeline,
                worker_stages=extras.worker_stages,
                dead_letters=dead_letters[0] if dead_letters else None,
                listeners=Listeners(self.on_result, self.on_error, extras.stream),
            )
            collector.encoded_in_workers = self.encode_in_workers
            if collector.drops_values:
                source.lend_views()
            for writer in writers if dead_letters else ():
                writer.send_rejects_to(dead_letters[0])
            loop = RunLoop(
                source, dispatcher, collector, checkpoint, state,
                self.checkpoint_seconds, self.checkpoint_results, memory, budget, extras.stop,
            )
            loop.stop_timeout = self.stop_timeout
            wait_for(loop, extras.termination)
        finally:
            completed = loop is not None and loop.completed
            if source is not None:
                source.close()
            for writer in [*writers, *dead_letters]:
                writer.stop(discard=checkpoint is None and not completed)
            progress.close()

        assert loop is not None
        if loop.error is not None:
            raise loop.error
        if dispatcher.input_error is not None:
            error = dispatcher.input_error
            raise InputError(
                f"reading the inputs failed with {type(error).__name__}: {error}; the jobs "
                "read before it are collected, so fix the input and run again"
            ) from error

        memory.sample(force=True)
        counts, rejected = split_rejected(collector.counts)
        plain, stages = split_counts(counts, self._stages())
        counts = {**plain, "resumed": resumed}
        logger.info(
            "run finished in %.1f s: %d jobs ok, %d failed, %d done by an earlier run",
            time.perf_counter() - began, counts["ok"], counts["failed"], resumed,
        )
        return RunSummary(
            value=self.strategy.value(),
            counts=counts,
            failures=tuple(collector.failures),
            outputs=tuple(output.path for output in self.outputs),
            checkpoint=self.checkpoint,
            elapsed=time.perf_counter() - began,
            peak_memory=memory.peak,
            stall_seconds={str(w.output.path): w.stall_seconds for w in writers},
            stages=stages,
            dead_letters=tuple(collector.dead_letters),
            rejected_rows=rejected,
        )

    def _stages(self) -> tuple[Stage, ...]:
        return () if self.pipeline is None else self.pipeline.stages

    def _log_start(self, total: int | None, resumed: int) -> None:
        if self.threads is not None:
            where = f"{self.workers} threads"
        elif self.executor is not None:
            where = f"executor {type(self.executor).__qualname__}"
        else:
            where = f"{self.workers} worker processes"
        budget = "" if self.max_memory is None else f", memory budget {format_bytes(self.max_memory)}"
        logger.info(
            "starting a run of %s jobs in %s with strategy %s%s; %d jobs done by an earlier run",
            "an unknown number of" if total is None else total,
            where,
            self.strategy.describe(),
            budget,
            resumed,
        )

    def _open_checkpoint(self, function: str, inputs: Iterable[Any]) -> Checkpoint | None:
        if self.checkpoint is None:
            return None
        fingerprint: dict[str, Any] = {
            "function": function,
            "strategy": self.strategy.describe(),
            "outputs": [output.describe() for output in self.outputs],
            "inputs": describe_inputs(inputs),
        }
        # Added only when set, so checkpoints of runs without them still match.
        if self.pipeline is not None:
            fingerprint["pipeline"] = self.pipeline.describe()
        if self.dead_letters is not None:
            fingerprint["dead_letters"] = self.dead_letters.describe()
        return Checkpoint(self.checkpoint, fingerprint)

    def _open_writers(self, state: CheckpointState, outputs: list[Output]) -> list[OutputWriter]:
        for output in outputs:
            check_folder(output)
        writers: list[tuple[OutputWriter, bool]] = []
        try:
            for output in outputs:
                position = state.outputs.get(str(output.path))
                if state.status == "finishing" and output.is_published():
                    continue
                output.checkpointed = self.checkpoint is not None
                writer = OutputWriter(output, self.queue_size)
                writers.append((writer, position is None))
                writer.open(position)
        except BaseException:
            # Stop the writers opened so far; a fresh file goes, a resumed one stays.
            for writer, fresh in writers:
                writer.stop(discard=fresh)
            raise
        return [writer for writer, _ in writers]

    def _finished_summary(self, state: CheckpointState, began: float) -> RunSummary:
        self.strategy.reset()
        self.strategy.restore(state.strategy)
        counts, rejected = split_rejected(state.counts)
        plain, stages = split_counts(counts, self._stages())
        return RunSummary(
            value=self.strategy.value(),
            counts={**plain, "resumed": len(state.done)},
            failures=tuple(state.failures),
            outputs=tuple(output.path for output in self.outputs),
            checkpoint=self.checkpoint,
            elapsed=time.perf_counter() - began,
            peak_memory=PeakMemory().peak,
            stall_seconds={},
            stages=stages,
            rejected_rows=rejected,
        )

