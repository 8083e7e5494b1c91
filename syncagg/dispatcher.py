"""Reading inputs lazily and keeping a bounded number of jobs in flight.

The dispatcher numbers inputs in the order the iterable yields them; the
number is the job id that checkpoints record, so a resumed run must read the
same inputs in the same order. It knows which jobs each worker holds, so the
jobs of a worker that dies can be sent again or failed.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from syncagg.jobranges import JobRanges
from syncagg.records import JobError, JobResult, Status

__all__ = ["Dispatcher", "Job", "default_key"]

logger = logging.getLogger("syncagg.dispatcher")

# A chunk should hold about this many seconds of work: long enough that
# sending it costs little, short enough to keep the workers balanced.
_CHUNK_SECONDS = 0.05
_MAX_CHUNK = 4096
_CHUNKS_PER_WORKER = 2


@dataclass
class Job:
    """One input on its way through a worker."""

    job_id: int
    item: Any
    key: str
    attempts: int = 0


def default_key(item: Any) -> str:
    """Return the text that identifies an input in records and errors."""
    if isinstance(item, str):
        return item
    if isinstance(item, os.PathLike):
        return os.fspath(item)  # type: ignore[return-value]
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
        self._inputs: Iterator[tuple[int, Any]] = enumerate(inputs)
        self._done = done
        self._key = key
        self._fixed_chunksize = chunksize
        self._retries = retries
        self._in_flight: list[dict[int, Job]] = [{} for _ in range(workers)]
        self._retry: deque[Job] = deque()
        self.exhausted = False
        self.input_error: BaseException | None = None
        self.skipped = 0

        # Without timings yet, start small; the first results set the size.
        self.chunksize = chunksize or 1
        self._max_chunk = _MAX_CHUNK
        if total is not None and chunksize is None:
            self._max_chunk = max(1, min(_MAX_CHUNK, -(-total // (workers * 4))))

    @property
    def in_flight(self) -> int:
        """Jobs sent to workers whose results have not arrived."""
        return sum(len(jobs) for jobs in self._in_flight)

    @property
    def finished(self) -> bool:
        """Whether every input has been read and every job has come back."""
        return self.exhausted and not self._retry and self.in_flight == 0

    def next_chunk(self, slot: int) -> list[Job]:
        """Return the next jobs for a worker, or an empty list if it has enough.

        Reads the input iterable, which may block or raise; an exception from
        it is stored in ``input_error`` and ends the reading.
        """
        limit = self.chunksize * _CHUNKS_PER_WORKER
        room = min(self.chunksize, limit - len(self._in_flight[slot]))
        if room <= 0:
            return []

        chunk = [self._retry.popleft() for _ in range(min(room, len(self._retry)))]
        if len(chunk) < room and not self.exhausted:
            chunk.extend(self._read(room - len(chunk)))

        in_flight = self._in_flight[slot]
        for job in chunk:
            job.attempts += 1
            in_flight[job.job_id] = job
        return chunk

    def _read(self, count: int) -> list[Job]:
        jobs: list[Job] = []
        done = self._done
        while len(jobs) < count:
            try:
                entry = next(self._inputs, None)
            except Exception as exc:
                self.input_error = exc
                self.exhausted = True
                break
            if entry is None:
                self.exhausted = True
                break
            job_id, item = entry
            if job_id in done:
                self.skipped += 1
                continue
            jobs.append(Job(job_id, item, self._key(item)))
        return jobs

    def complete(self, slot: int, job_ids: list[int]) -> list[Job]:
        """Take jobs whose results arrived out of the worker's in-flight set."""
        in_flight = self._in_flight[slot]
        return [in_flight.pop(job_id) for job_id in job_ids]

    def observe(self, started: list[float], finished: list[float]) -> None:
        """Adapt the chunk size to the measured time per job."""
        if self._fixed_chunksize is not None or not started:
            return
        per_job = max((sum(finished) - sum(started)) / len(started), 1e-7)
        self.chunksize = max(1, min(self._max_chunk, int(_CHUNK_SECONDS / per_job)))

    def worker_died(self, slot: int, pid: int, running: int | None, cause: str) -> list[JobResult]:
        """Send a dead worker's jobs again, or fail them once out of retries.

        The job the worker was running is charged with the attempt. When the
        worker died between jobs no job can be singled out, so every job it
        held is charged, which keeps a crash that repeats from looping forever.
        """
        jobs = self._in_flight[slot]
        self._in_flight[slot] = {}
        failed: list[JobResult] = []
        for job in sorted(jobs.values(), key=lambda job: job.job_id):
            charged = running is None or job.job_id == running
            if not charged:
                job.attempts -= 1
            elif job.attempts > self._retries:
                failed.append(_died(job, pid, cause))
                continue
            self._retry.append(job)

        if failed:
            logger.warning("%d jobs failed because worker %d %s", len(failed), pid, cause)
        return failed

    def pending_ids(self) -> Iterator[int]:
        """Ids of jobs sent out or queued for a retry, for a final report."""
        in_flight = (job.job_id for jobs in self._in_flight for job in jobs.values())
        return itertools.chain(in_flight, (job.job_id for job in self._retry))


def _died(job: Job, pid: int, cause: str) -> JobResult:
    message = f"worker {pid} {cause} while running this job ({job.attempts} attempts)"
    return JobResult(
        job_id=job.job_id,
        key=job.key,
        status=Status.FAILED,
        value=None,
        error=JobError("syncagg.WorkerDied", message),
        worker_pid=pid,
        started=0.0,
        finished=0.0,
        attempts=job.attempts,
    )
