"""Running jobs through a ``concurrent.futures.Executor``, or collecting the caller's futures.

With an executor, each chunk of jobs is one submitted call of ``run_chunk``,
which runs the user's function on every input of the chunk and returns a
``ResultBatch``. That works with any executor: threads, a process pool,
loky, or Dask's ``Client.get_executor()``. Results come back through the
executor, not through the shared-memory ring.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from syncagg.combiners import Combiner
from syncagg.dispatcher import Chunk, Dispatcher
from syncagg.folding import BatchFolder
from syncagg.records import error_fields
from syncagg.source import Sink, Source
from syncagg.transport import ResultBatch

__all__ = ["ExecutorSource", "FutureSource", "Threads", "run_chunk"]

logger = logging.getLogger("syncagg.executors")


@dataclass(frozen=True)
class Threads:
    """Run jobs in ``count`` threads of the calling process: ``workers=Threads(16)``.

    Suits functions that wait on I/O. No shared memory and no pickling are
    involved; results pass between threads as they are.
    """

    count: int

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"Threads(count) must be a positive int, got {self.count!r}")




def run_chunk(
    fn: Callable[[Any], Any],
    job_ids: range | list[int],
    items: Sequence[Any],
    combiner: Combiner | None = None,
) -> ResultBatch:
    """Run ``fn`` on each input; an exception makes that job's error entry.

    With a ``combiner`` the chunk's values are folded into one accumulator
    in ``partials``, as a worker process does per batch (see ``folding.py``).
    """
    batch = ResultBatch(os.getpid(), job_ids=job_ids)
    folder = None if combiner is None else BatchFolder(combiner)
    for index, item in enumerate(items):
        started = time.time()
        try:
            value = fn(item)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the job fails, the thread goes on
            value = None
            batch.errors[index] = error_fields(exc)
        else:
            if folder is not None:
                value, error = folder.add(value)
                if error is not None:
                    batch.errors[index] = error
        batch.values.append(value)
        batch.starts[index] = started
        batch.finished.append(time.time())
    if folder is not None:
        batch.partials = folder.take()
    return batch


class ExecutorSource(Source):
    """Submit chunks to an executor, ``slots`` chunks at a time.

    Parameters
    ----------
    executor : Executor
        Where ``run_chunk`` runs.
    fn : callable
        The user's function.
    slots : int
        Chunks in flight at once; twice the executor's workers keeps them busy
        while results are collected.
    owned : bool
        Shut the executor down at ``close``; true for ``Threads``.
    """

    def __init__(
        self,
        executor: Executor,
        fn: Callable[[Any], Any],
        slots: int,
        owned: bool,
        combiner: Combiner | None = None,
    ) -> None:
        self.executor = executor
        self.slots = slots
        self._fn = fn
        self._owned = owned
        self._combiner = combiner
        self._running: dict[Future[ResultBatch], int] = {}
        self._closed = False

    @classmethod
    def threads(
        cls, threads: Threads, fn: Callable[[Any], Any], combiner: Combiner | None = None
    ) -> ExecutorSource:
        """Return a source that owns a thread pool of ``threads.count`` threads."""
        executor = ThreadPoolExecutor(threads.count, thread_name_prefix="syncagg-thread")
        return cls(executor, fn, slots=threads.count * 2, owned=True, combiner=combiner)

    def dispatch(self, dispatcher: Dispatcher, sink: Sink) -> None:
        busy = set(self._running.values())
        for slot in range(self.slots):
            if slot in busy:
                continue
            chunk = dispatcher.next_chunk(slot)
            if chunk is None:
                continue
            dispatcher.register(slot, chunk)
            self._running[self._submit(chunk)] = slot

    def _submit(self, chunk: Chunk) -> Future[ResultBatch]:
        return self.executor.submit(run_chunk, self._fn, chunk.job_ids, chunk.items, self._combiner)

    def poll(self, timeout: float, dispatcher: Dispatcher, sink: Sink) -> None:
        if not self._running:
            time.sleep(min(timeout, 0.01))
            return

        done, _ = wait(list(self._running), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            slot = self._running.pop(future)
            try:
                batch = future.result()
            except BaseException as exc:  # noqa: BLE001 - becomes failed or retried jobs
                cause = f"raised {type(exc).__name__}: {exc}"
                logger.warning("a chunk of jobs on slot %d %s", slot, cause)
                sink.add_failures(dispatcher.worker_died(slot, 0, None, cause))
                continue
            sink.add_batch(slot, batch)

    def terminate(self) -> None:
        for future in self._running:
            future.cancel()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.terminate()
        if self._owned:
            self.executor.shutdown(wait=True, cancel_futures=True)


class FutureSource(Source):
    """Collect futures the caller already submitted; each future is one job.

    The inputs the dispatcher hands out are the futures themselves. A future
    that raises makes a failed job with that exception.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._pending: dict[Future[Any], tuple[int, int]] = {}

    def dispatch(self, dispatcher: Dispatcher, sink: Sink) -> None:
        busy = {slot for slot, _ in self._pending.values()}
        for slot in range(self.slots):
            if slot in busy:
                continue
            chunk = dispatcher.next_chunk(slot)
            if chunk is None:
                continue
            if len(chunk.items) != 1:
                raise AssertionError("futures are collected one per chunk")
            dispatcher.register(slot, chunk)
            future = chunk.items[0]
            if not isinstance(future, Future):
                raise TypeError(
                    f"collect() takes concurrent.futures.Future objects, got {future!r} of type "
                    f"{type(future).__qualname__}; pass the futures that Executor.submit returned"
                )
            self._pending[future] = (slot, chunk.job_ids[0])

    def poll(self, timeout: float, dispatcher: Dispatcher, sink: Sink) -> None:
        if not self._pending:
            time.sleep(min(timeout, 0.01))
            return

        done, _ = wait(list(self._pending), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            slot, job_id = self._pending.pop(future)
            now = time.time()
            batch = ResultBatch(0, [job_id], [None], {0: now}, [now])
            try:
                batch.values[0] = future.result()
            except BaseException as exc:  # noqa: BLE001 - a failed job, like fn raising
                batch.errors[0] = error_fields(exc)
            sink.add_batch(slot, batch)

    def terminate(self) -> None:
        return None

    def close(self) -> None:
        return None
