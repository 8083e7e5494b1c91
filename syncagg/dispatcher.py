"""Reading inputs lazily and keeping a bounded number of jobs in flight.

The dispatcher numbers inputs in the order the iterable yields them; the
number is the job id that checkpoints record, so a resumed run must read the
same inputs in the same order. Jobs go out in chunks, and a worker returns
results in the order it received them, so the dispatcher tracks whole chunks
per worker instead of single jobs: a batch of ``n`` results completes the
next ``n`` jobs of that worker's oldest chunks. When a worker dies, the jobs
of its chunks that have no result yet are sent again or failed.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncagg.jobranges import JobRanges
from syncagg.records import JobError, JobResult, Status
from syncagg.transport import ResultBatch

__all__ = ["Chunk", "Dispatcher", "Segment", "Started", "default_key"]

logger = logging.getLogger("syncagg.dispatcher")

# A chunk should hold about this many seconds of work: long enough that
# sending it costs little, short enough to keep the workers balanced.
_CHUNK_SECONDS = 0.05
_MAX_CHUNK = 32768
# Pickled size that chunks are cut down to, estimated from the chunk before,
# so that large inputs do not pile up in the workers and a chunk fits in an
# empty task pipe.
_CHUNK_BYTES = 1024 * 1024
_CHUNKS_PER_WORKER = 4

# After an input iterable paused, reading waits this long before it tries again.
_PAUSE_SECONDS = 0.1


class Pause:
    """The type of ``PAUSE``."""

    def __repr__(self) -> str:
        return "PAUSE"


# Yielded by an input iterable whose ``may_pause`` attribute is true, when no
# input is ready for now: the chunk read so far goes out, and the next read
# tries again. Standard input on the command line uses it, so lines that
# trickle in run without waiting for a full chunk.
PAUSE = Pause()


class Started(enum.Enum):
    """What ``Dispatcher.worker_died`` receives when a source cannot tell which jobs started."""

    UNKNOWN = "unknown"


@dataclass
class Chunk:
    """Jobs sent to one worker in one message.

    ``job_ids`` is a ``range`` for fresh inputs, which pickles in a few
    bytes, and a list for retried jobs. ``items`` is a ``range`` too when
    the inputs are one. ``done`` counts the jobs at the front
    whose results have arrived.
    """

    job_ids: range | list[int]
    items: Sequence[Any]
    attempts: list[int]
    done: int = 0

    def message(self) -> tuple[range | list[int], Sequence[Any]]:
        """Return what the worker receives."""
        return (self.job_ids, self.items)


@dataclass
class Segment:
    """Jobs ``start`` to ``stop - 1`` (positions in ``chunk``) of one result batch."""

    chunk: Chunk
    start: int
    stop: int


@dataclass
class _Retry:
    job_ids: list[int] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)


def default_key(item: Any) -> str:
    """Return the text that identifies an input in records and errors."""
    if isinstance(item, str):
        return item
    if type(item) is int:
        # The common case first: the isinstance check of an ABC below is slow.
        return repr(item)
    if isinstance(item, os.PathLike):
        return str(os.fspath(item))
    text = repr(item)
    return text if len(text) <= 200 else text[:197] + "..."


class Dispatcher:
    """Hand out chunks of jobs and account for the ones in flight."""

    def __init__(
        self,
        inputs: Iterable[Any],
        workers: int,
        done: JobRanges,
        key: Callable[[Any], str] = default_key,
        chunksize: int | None = None,
        retries: int = 1,
        total: int | None = None,
    ) -> None:
        self._inputs: Iterator[Any]
        # Inputs that may pause (see PAUSE) are read one at a time, and not
        # again until _PAUSE_SECONDS after a pause, so that the other slots'
        # reads do not each wait for quiet inputs.
        self._pausing = bool(getattr(inputs, "may_pause", False))
        self._paused_at = -math.inf
        # A range of inputs goes out as ranges: a few bytes a chunk to pickle,
        # instead of one integer an input in the parent and the worker.
        self._range = inputs if type(inputs) is range else None
        if type(inputs) in (range, list, tuple):
            # Iterating these cannot raise, and islice reads their iterators
            # in C, about ten times faster than through the generator.
            self._inputs = iter(inputs)
        else:
            self._inputs = self._guarded(inputs)
        self._next_id = 0
        self._done = done
        self.key = key
        self._fixed_chunksize = chunksize
        self._retries = retries
        self._chunks: list[deque[Chunk]] = [deque() for _ in range(workers)]
        self._in_flight = [0] * workers
        self._retry = _Retry()
        self.exhausted = False
        self.input_error: BaseException | None = None

        # Without timings yet, start small; the first results set the size.
        self.chunksize = chunksize or 1
        self._max_chunk = _MAX_CHUNK
        # Lowered by measure_payload for inputs of many bytes each.
        self._byte_cap = _MAX_CHUNK
        if total is not None and chunksize is None:
            self._max_chunk = max(1, min(_MAX_CHUNK, -(-total // (workers * 4))))

    @property
    def in_flight(self) -> int:
        """Jobs sent to workers whose results have not arrived."""
        return sum(self._in_flight)

    @property
    def finished(self) -> bool:
        """Whether every input has been read and every job has come back."""
        return self.exhausted and not self._retry.job_ids and self.in_flight == 0

    def next_chunk(self, slot: int) -> Chunk | None:
        """Return the next chunk for a worker, or ``None`` if it holds enough.

        Reads the input iterable, which may block; an exception from it is
        stored in ``input_error`` and ends the reading. The chunk counts as
        in flight only after ``register``.
        """
        # Whole chunks only: topping the worker up after every result batch
        # would send a message, and wake the worker's task reader, per batch.
        if self._in_flight[slot] > self.chunksize * (_CHUNKS_PER_WORKER - 1):
            return None
        if self._retry.job_ids:
            return self._take_retries(self.chunksize)
        if self.exhausted or time.monotonic() - self._paused_at < _PAUSE_SECONDS:
            return None
        return self._read(self.chunksize)

    def _take_retries(self, room: int) -> Chunk:
        retry = self._retry
        chunk = Chunk(retry.job_ids[:room], retry.items[:room], retry.attempts[:room])
        del retry.job_ids[:room], retry.items[:room], retry.attempts[:room]
        return chunk

    def _guarded(self, inputs: Iterable[Any]) -> Iterator[Any]:
        # Ends the iteration at an input error instead of raising it, so the
        # inputs read before the error in the same chunk still run.
        try:
            yield from inputs
        except Exception as exc:  # noqa: BLE001 - stored and raised by the aggregator
            self.input_error = exc

    def _read(self, room: int) -> Chunk | None:
        while True:
            first = self._next_id
            items, paused = self._read_items(room)
            self._next_id += len(items)
            if len(items) < room and not paused:
                self.exhausted = True
            if not items:
                return None

            if first >= self._done.end:
                return Chunk(range(first, first + len(items)), items, [0] * len(items))
            chunk = self._without_done(first, items)
            if chunk is not None or self.exhausted:
                return chunk

    def _read_items(self, room: int) -> tuple[Sequence[Any], bool]:
        """Read up to ``room`` inputs; the flag is true when a ``PAUSE`` ended the reading."""
        if self._range is not None:
            return self._range[self._next_id : self._next_id + room], False
        if not self._pausing:
            return list(itertools.islice(self._inputs, room)), False
        items: list[Any] = []
        for item in itertools.islice(self._inputs, room):
            if item is PAUSE:
                self._paused_at = time.monotonic()
                return items, True
            items.append(item)
        return items, False

    def _without_done(self, first: int, items: Sequence[Any]) -> Chunk | None:
        """Drop inputs that an earlier run finished; ``None`` if all were."""
        done = self._done
        job_ids = [first + i for i in range(len(items)) if first + i not in done]
        if not job_ids:
            return None
        kept = [items[job_id - first] for job_id in job_ids]
        return Chunk(job_ids, kept, [0] * len(kept))

    def register(self, slot: int, chunk: Chunk) -> None:
        """Count a chunk as sent to a worker."""
        if type(chunk.job_ids) is range:
            # Fresh inputs: a C-speed fill instead of a loop per job.
            chunk.attempts = [1] * len(chunk.attempts)
        else:
            chunk.attempts = [attempts + 1 for attempts in chunk.attempts]
        self._chunks[slot].append(chunk)
        self._in_flight[slot] += len(chunk.items)

    def complete(self, slot: int, job_ids: Sequence[int]) -> list[Segment]:
        """Mark the next ``len(job_ids)`` jobs of a worker done; return where they lie."""
        segments = self._take(slot, len(job_ids))
        first = segments[0]
        if first.chunk.job_ids[first.start] != job_ids[0]:
            raise RuntimeError(
                f"worker {slot} returned job {job_ids[0]} where job "
                f"{first.chunk.job_ids[first.start]} was expected"
            )
        return segments

    def fail_next(self, slot: int, count: int, pid: int, error: JobError) -> list[JobResult]:
        """Fail a worker's next ``count`` jobs, whose results arrived but cannot be read."""
        failed = [
            JobResult(
                job_id=segment.chunk.job_ids[i],
                key=self.key(segment.chunk.items[i]),
                status=Status.FAILED,
                value=None,
                error=error,
                worker_pid=pid,
                started=0.0,
                finished=0.0,
                attempts=segment.chunk.attempts[i],
            )
            for segment in self._take(slot, count)
            for i in range(segment.start, segment.stop)
        ]
        logger.warning(
            "%d jobs failed because their results do not unpickle in the parent: %s",
            len(failed), ", ".join(str(result.job_id) for result in failed[:10]),
        )
        return failed

    def _take(self, slot: int, count: int) -> list[Segment]:
        """Count the next ``count`` jobs of a worker as returned; return where they lie."""
        chunks = self._chunks[slot]
        self._in_flight[slot] -= count
        segments = []
        while count:
            chunk = chunks[0]
            take = min(count, len(chunk.items) - chunk.done)
            segments.append(Segment(chunk, chunk.done, chunk.done + take))
            chunk.done += take
            count -= take
            if chunk.done == len(chunk.items):
                chunks.popleft()
        return segments

    def observe(self, batch: ResultBatch) -> None:
        """Adapt the chunk size to the measured time per job.

        The time per job is the batch's span over its length: two reads, and
        it counts what the worker spends between jobs as well. The size grows
        at once but shrinks by half at most per batch, because a worker that
        the system paused for a few milliseconds inside one batch makes its
        jobs look slow. A chunk size that drops ten times for one such batch
        shrinks the work held by the worker with it, and the worker then
        waits for new inputs.
        """
        if self._fixed_chunksize is not None or not batch.finished:
            return
        per_job = max((batch.finished[-1] - batch.started_at(0)) / len(batch.finished), 1e-7)
        target = max(1, min(self._max_chunk, int(_CHUNK_SECONDS / per_job)))
        self.chunksize = min(max(target, self.chunksize // 2), self._byte_cap)

    def measure_payload(self, nbytes: int, count: int) -> None:
        """Cap the chunk size so that a chunk pickles to about ``_CHUNK_BYTES``.

        ``nbytes`` is the pickled size of a chunk of ``count`` inputs.
        """
        if self._fixed_chunksize is not None or count == 0:
            return
        self._byte_cap = max(1, _CHUNK_BYTES * count // max(nbytes, 1))
        self.chunksize = min(self.chunksize, self._byte_cap)

    def held_jobs(self, slot: int) -> list[int]:
        """Return the ids of a worker's jobs whose results have not arrived, in the order sent."""
        return [job_id for job_id, _, _ in self._held(slot)]

    def _held(self, slot: int) -> list[tuple[int, Any, int]]:
        """Return ``(job id, input, attempts)`` of a worker's jobs without results."""
        return [
            (chunk.job_ids[i], chunk.items[i], chunk.attempts[i])
            for chunk in self._chunks[slot]
            for i in range(chunk.done, len(chunk.items))
        ]

    def worker_died(
        self,
        slot: int,
        pid: int,
        running: int | None,
        cause: str,
        started: int | None | Started = Started.UNKNOWN,
    ) -> list[JobResult]:
        """Send a dead worker's jobs again, or fail them once out of retries.

        ``running`` is the job the worker was running and ``started`` the
        last job it started (``None``: none), as worker processes publish
        them in their ring header. The running job is charged with the
        attempt. A worker that died between jobs may have died writing their
        results, so every job without a result up to the last started one is
        charged, which keeps a crash that repeats from looping forever. Jobs
        after it never ran and are sent again without charge. A source that
        cannot tell passes no ``started``, and every held job is charged.
        """
        held = self._held(slot)
        self._chunks[slot] = deque()
        self._in_flight[slot] = 0

        charged = _charged(held, running, started)
        failed: list[JobResult] = []
        retry = self._retry
        for job_id, item, attempts in held:
            if job_id not in charged:
                attempts -= 1
            elif attempts > self._retries:
                failed.append(_died(job_id, self.key(item), attempts, pid, cause))
                continue
            retry.job_ids.append(job_id)
            retry.items.append(item)
            retry.attempts.append(attempts)

        logger.debug(
            "worker %d %s holding %d jobs without results: %d charged, %d failed",
            pid, cause, len(held), len(charged), len(failed),
        )
        if failed:
            noun = "job" if len(failed) == 1 else "jobs"
            logger.warning(
                "%d %s failed because worker %d %s: %s",
                len(failed), noun, pid, cause, ", ".join(str(r.job_id) for r in failed[:10]),
            )
        return failed


def _charged(held: list[tuple[int, Any, int]], running: int | None, started: int | None | Started) -> set[int]:
    """Return the ids of the held jobs that a dead worker had started."""
    if running is not None:
        return {running}
    ids = [job_id for job_id, _, _ in held]
    if started is Started.UNKNOWN:
        return set(ids)
    # Jobs run in the order they were sent. A last started job that is not
    # held any more had its result delivered, so no held job had started.
    if started is None or started not in ids:
        return set()
    return set(ids[: ids.index(started) + 1])


def _died(job_id: int, key: str, attempts: int, pid: int, cause: str) -> JobResult:
    message = f"worker {pid} {cause} while running this job ({attempts} attempts)"
    return JobResult(
        job_id=job_id,
        key=key,
        status=Status.FAILED,
        value=None,
        error=JobError("syncagg.WorkerDied", message),
        worker_pid=pid,
        started=0.0,
        finished=0.0,
        attempts=attempts,
    )
