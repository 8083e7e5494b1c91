"""Running chunks of jobs on a Dask distributed cluster.

``Aggregator(executor=client)`` and ``executor=client.get_executor()`` both
run here. Each chunk of jobs is one task, ``run_chunk`` on a Dask worker,
submitted through the client's own futures instead of the
``ClientExecutor``'s ``concurrent.futures`` wrappers. In distributed 2026.8
a wrapper is never resolved when fetching a finished result fails because
its worker died and the recomputed task then fails with ``KilledWorker``,
which would leave the run waiting forever.

- Each task is submitted with ``pure=False``, so it gets a key of its own.
  With Dask's default, ``pure=True``, the key is a hash of the arguments,
  and a retried chunk carries the same arguments as the attempt that failed.
- When a worker dies, the scheduler runs its tasks again on other workers,
  up to ``distributed.scheduler.allowed-failures`` times (3 by default),
  and then fails them with ``KilledWorker``. It counts every task assigned
  to the worker, running or waiting, and does not tell which job of a task
  was running. So a task that fails this way charges no job. A task of
  several jobs is split in halves, and a single job becomes a suspect that
  runs alone, through ``run_marked``, which records on the scheduler that
  the job started, and again when it ended. If the worker dies between the
  two records, the job is charged like the job a local worker was running.
  After ``retries`` more attempts it fails with ``syncagg.WorkerDied``. A
  job that ended but whose result was lost with a worker that another task
  killed runs again without charge.
- With ``Combine(combiner, in_workers=True)`` each task folds its values
  on the worker, so one accumulator per task travels back instead of
  every value.

This module never imports Dask. It looks the package up in ``sys.modules``,
because a Dask client exists only if the caller imported ``distributed``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

from syncagg.combiners import Combiner
from syncagg.dispatcher import Dispatcher
from syncagg.executors import run_chunk
from syncagg.source import Sink, Source
from syncagg.transport import ResultBatch

__all__ = ["DaskSource", "cluster_threads", "dask_client", "run_marked"]

logger = logging.getLogger("syncagg.dask")

# The maximum wait, in seconds, for one finished task's result to arrive from its worker.
_FETCH_SECONDS = 1.0


def dask_client(executor: Any) -> Any | None:
    """Return the ``distributed.Client`` behind ``executor``, or ``None`` for any other executor."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    if isinstance(executor, distributed.Client):
        return executor
    if isinstance(executor, distributed.cfexecutor.ClientExecutor):
        return executor._client
    return None


def cluster_threads(client: Any) -> int:
    """Return the number of threads of all workers connected to the client's scheduler.

    Counted once, when the ``Aggregator`` is made: workers that join later
    get chunks only if ``workers`` was given explicitly or the aggregator is
    made again.
    """
    nthreads: dict[str, int] = client.nthreads()
    total = sum(nthreads.values())
    if total < 1:
        raise ValueError(
            f"the Dask cluster at {client.scheduler.address} has no workers, so the default "
            "workers= would be 0; call client.wait_for_workers(n) first or pass workers=N"
        )
    return total


def run_marked(
    fn: Callable[[Any], Any],
    job_ids: range | list[int],
    items: Sequence[Any],
    combiner: Combiner | None,
    topic: str,
) -> ResultBatch:
    """Run jobs on a Dask worker once the scheduler has stored, under ``topic``, that this task started.

    ``Client.log_event`` waits for the scheduler's reply, so the record
    exists even when the first job kills its worker at once. A second
    record, ``done KEY``, marks the end of the jobs. A worker that dies after
    it, before the result was fetched, was killed by another task.
    """
    distributed = sys.modules["distributed"]  # always loaded in a Dask worker
    key = distributed.get_worker().get_current_task()
    client = distributed.get_client()
    client.log_event(topic, key)
    batch = run_chunk(fn, job_ids, items, combiner)
    client.log_event(topic, f"done {key}")
    return batch


@dataclass
class _Part:
    """One task: consecutive jobs of the chunk a slot holds, and the task's outcome once done."""

    slot: int
    job_ids: range | list[int]
    key: str = ""
    marked: bool = False
    batch: ResultBatch | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.batch is not None or self.error is not None


class DaskSource(Source):
    """Submit chunks to a Dask cluster, ``slots`` chunks at a time, and isolate jobs that kill workers.

    A chunk normally runs as one task. Jobs of a task that lost its worker
    get a group number, and a chunk that contains grouped jobs is split so
    that each group runs as a task of its own. The caller owns the client,
    so ``close`` cancels the tasks still running and leaves the client open.

    Parameters
    ----------
    client : distributed.Client
        Where the tasks run.
    fn : callable
        The user's function.
    slots : int
        Chunks in flight at once.
    options : dict
        Keyword arguments for ``client.submit``, such as ``workers`` or
        ``resources``; ``pure`` is always ``False``.
    combiner : Combiner, optional
        Fold each task's values on its worker, so only one accumulator per
        task comes back over the network (``Combine(..., in_workers=True)``).
    """

    def __init__(
        self,
        client: Any,
        fn: Callable[[Any], Any],
        slots: int,
        options: dict[str, Any],
        combiner: Combiner | None = None,
    ) -> None:
        self.client = client
        self.slots = slots
        self._fn = fn
        self._combiner = combiner
        self._options = {**options, "pure": False}
        self._closed = False
        self._parts: dict[int, deque[_Part]] = {}
        self._futures: dict[Any, _Part] = {}
        # Dask runs done callbacks in a thread of its own; they only queue the future.
        self._arrived: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._groups: dict[int, int] = {}
        self._group_numbers = itertools.count()
        self._topic = f"syncagg-started-{uuid.uuid4().hex}"

    @classmethod
    def from_executor(
        cls, executor: Any, fn: Callable[[Any], Any], slots: int, combiner: Combiner | None = None
    ) -> DaskSource:
        """Return a source for a ``distributed.Client`` or the executor of one."""
        client = dask_client(executor)
        if client is None:
            raise TypeError(
                f"DaskSource needs a distributed.Client or its get_executor(), got {executor!r}"
            )
        options: dict[str, Any] = {}
        if executor is not client:
            # The keyword arguments given to client.get_executor(), such as
            # workers= or resources=, which ClientExecutor keeps in _kwargs.
            options = dict(getattr(executor, "_kwargs", {}))
        return cls(client, fn, slots, options, combiner)

    def dispatch(self, dispatcher: Dispatcher, sink: Sink) -> None:
        for slot in range(self.slots):
            if self._parts.get(slot):
                continue
            chunk = dispatcher.next_chunk(slot)
            if chunk is None:
                continue
            dispatcher.register(slot, chunk)
            parts: deque[_Part] = deque()
            for start, stop in self._split(chunk.job_ids):
                part = _Part(slot, chunk.job_ids[start:stop])
                items = chunk.items[start:stop]
                part.marked = len(part.job_ids) == 1 and part.job_ids[0] in self._groups
                arguments: tuple[Any, ...]
                if part.marked:
                    arguments = (run_marked, self._fn, part.job_ids, items, self._combiner, self._topic)
                else:
                    arguments = (run_chunk, self._fn, part.job_ids, items, self._combiner)
                future = self.client.submit(*arguments, **self._options)
                part.key = future.key
                self._futures[future] = part
                future.add_done_callback(self._arrived.put)
                parts.append(part)
            self._parts[slot] = parts

    def _split(self, job_ids: range | list[int]) -> Iterator[tuple[int, int]]:
        """Yield ``(start, stop)`` positions of the runs of jobs that share a group."""
        if not self._groups:
            yield (0, len(job_ids))
            return
        start = 0
        for stop in range(1, len(job_ids) + 1):
            if stop == len(job_ids) or self._groups.get(job_ids[stop]) != self._groups.get(job_ids[start]):
                yield (start, stop)
                start = stop

    def poll(self, timeout: float, dispatcher: Dispatcher, sink: Sink) -> None:
        if not self._futures:
            time.sleep(min(timeout, 0.01))
            return
        try:
            arrived = [self._arrived.get(timeout=timeout)]
        except queue.Empty:
            return
        while not self._arrived.empty():
            arrived.append(self._arrived.get_nowait())

        slots = set()
        for future in arrived:
            part = self._futures.pop(future, None)
            if part is None:
                continue  # a task of a chunk that _lost dropped
            if self._take_outcome(future, part):
                slots.add(part.slot)
                continue
            # Not fetched yet: Dask computes it again, and the callback fires when it is done.
            self._futures[future] = part
            future.add_done_callback(self._arrived.put)
        for slot in slots:
            self._deliver(slot, dispatcher, sink)

    def _take_outcome(self, future: Any, part: _Part) -> bool:
        """Store a finished task's batch or error in its part; ``False`` if its result did not arrive in time."""
        # Reading an erred task's exception, not calling result(): in
        # distributed 2026.8, result() never returns when the task raised a
        # BaseException that is not an Exception, such as a user's own.
        error = future.exception() if future.status == "error" else None
        if error is None and future.cancelled():
            error = CancelledError(f"Dask cancelled the task {future.key}")
        if error is not None:
            part.error = error
            return True
        try:
            # Fetches the result from the worker. If that worker died after
            # finishing the task, Dask computes it again, maybe never when no
            # worker is left, so the wait is bounded and the run loop can stop.
            part.batch = future.result(timeout=_FETCH_SECONDS)
        except TimeoutError:
            return False
        except BaseException as exc:  # noqa: BLE001 - becomes failed or retried jobs
            part.error = exc
        return True

    def _deliver(self, slot: int, dispatcher: Dispatcher, sink: Sink) -> None:
        """Report the finished tasks at the front of a slot, in the order its jobs were sent."""
        parts = self._parts[slot]
        while parts and parts[0].done:
            part = parts.popleft()
            if part.error is not None:
                self._lost(part, part.error, dispatcher, sink)
                return
            assert part.batch is not None
            for job_id in part.job_ids:
                self._groups.pop(job_id, None)
            sink.add_batch(slot, part.batch)

    def _lost(self, part: _Part, error: BaseException, dispatcher: Dispatcher, sink: Sink) -> None:
        """Turn a task that raised into retried or failed jobs, and cancel the rest of its chunk.

        The dispatcher sends every job of the chunk without a result again,
        so the chunk's later tasks are cancelled even if they are running.
        """
        dropped = [future for future, other in self._futures.items() if other.slot == part.slot]
        for future in dropped:
            del self._futures[future]
        self._cancel(dropped)
        self._parts[part.slot].clear()

        # The chunk's earlier tasks were delivered, so its jobs without a
        # result are this task's, then those of the dropped tasks.
        running: int | None = None
        started: int | None = None
        if not _is_killed_worker(error):
            # Not a lost worker (a task cancelled by someone else, a lost
            # scheduler): charge this task's jobs, not the dropped ones.
            started = part.job_ids[-1]
        elif part.marked and self._killed_while_running(part.key):
            running = part.job_ids[0]
        else:
            # The task may only have waited on the lost worker, so no job is
            # charged. Each half runs as a task of its own, down to single
            # jobs that run marked, so a job that kills every worker ends.
            middle = max(1, len(part.job_ids) // 2)
            for half in (part.job_ids[:middle], part.job_ids[middle:]):
                group = next(self._group_numbers)
                self._groups.update(dict.fromkeys(half, group))

        # The dispatcher's messages read "worker <pid> <cause>"; 0 when no worker is known.
        pid = getattr(getattr(error, "last_worker", None), "pid", None) or 0
        cause = _describe(error)
        logger.warning(
            "a Dask task of %d jobs (%d to %d) on slot %d failed: worker %d %s",
            len(part.job_ids), part.job_ids[0], part.job_ids[-1], part.slot, pid, cause,
        )
        failures = dispatcher.worker_died(part.slot, pid, running, cause, started=started)
        for failure in failures:
            self._groups.pop(failure.job_id, None)
        sink.add_failures(failures)

    def _killed_while_running(self, key: str) -> bool:
        """Return whether the marked task ``key`` started and its jobs had not ended when its worker died.

        A task whose jobs ended lost only its result, which waited on the
        worker for the fetch when another task killed that worker.
        """
        records = self._started()
        return key in records and f"done {key}" not in records

    def _started(self) -> set[str]:
        """Return the keys of the marked tasks that started, as the scheduler stored them.

        NOTE: the scheduler keeps the last ``distributed.admin.low-level-log-length``
        events of a topic (1000 in distributed 2026.8), and keeps the topic
        after the run. A marked task followed by that many later starts
        before its worker's loss is seen would not be charged.
        """
        return {message for _, message in self.client.get_events(self._topic)}

    def _cancel(self, futures: list[Any]) -> None:
        # A closed client has cancelled its futures already, and cancelling
        # through it would raise.
        if futures and self.client.status == "running":
            self.client.cancel(futures)

    def terminate(self) -> None:
        self._cancel(list(self._futures))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.terminate()
        self._futures.clear()
        self._parts.clear()


def _is_killed_worker(error: BaseException) -> bool:
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(error, distributed.KilledWorker)


def _describe(error: BaseException) -> str:
    """Return the cause for failure messages; a KilledWorker's own text runs to five sentences."""
    if not _is_killed_worker(error):
        return f"raised {type(error).__name__}: {error}"
    # getattr: KilledWorker gained last_worker and allowed_failures over
    # distributed's releases; 2026.8 has both.
    worker = getattr(error, "last_worker", None)
    address = getattr(worker, "address", worker)
    allowed = getattr(error, "allowed_failures", None)
    attempts = "" if allowed is None else f" ({allowed + 1} Dask attempts)"
    return f"died at {address}{attempts}"
