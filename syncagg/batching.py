"""Gathering a worker's results into batches and sending them through its ring region.

``BatchSender`` collects the results of consecutive jobs as columns and
sizes them cheaply. A batch that is full or old is pickled into the
worker's ring region, or into a one-off segment when the region cannot
take it, and its descriptor goes out on the worker's result pipe. Large
numpy arrays move into the region as soon as their job returns them.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from syncagg import sharedarray
from syncagg.folding import BatchFolder
from syncagg.ring import RingWriter
from syncagg.segments import create_segment, segment_buffer, segment_exists
from syncagg.transport import (
    LEND_MIN_BYTES,
    EncodedMessage,
    ResultBatch,
    RingLocator,
    encode_message,
    estimate_size,
)

if TYPE_CHECKING:
    from syncagg.worker import WorkerSpec

__all__ = ["BatchSender"]

# A batch is full once arrays in the ring take this share of the region.
_RING_BATCH_SHARE = 4

# Below this many values to a full batch, every job's value is sized: sizing
# large values costs little beside making them.
_CHECK_EACH_BELOW = 16


class BatchSender:
    """Gathers results and flushes them by size and by age."""

    def __init__(self, ring: RingWriter, spec: WorkerSpec, alive: Callable[[], bool]) -> None:
        self._ring = ring
        self._conn = spec.results
        self._alive = alive
        self.batch_bytes = spec.batch_bytes
        self.latency = spec.batch_latency
        self._prefix = f"{spec.segment_prefix}w{os.getpid()}-"
        self._segments = 0
        self._last_segment: str | None = None
        self.folder = None if spec.combiner is None else BatchFolder(spec.combiner)
        # (position, bytes, address) of each array that allocate reserved for
        # the pending batch; only the thread that runs jobs may allocate.
        self._arrays: list[tuple[int, int, int]] = []
        self._thread = threading.get_ident()
        # Bytes of arrays in the ring that make a batch full.
        self._ring_batch_bytes = ring.capacity // _RING_BATCH_SHARE
        self._new_batch()

    def _new_batch(self) -> None:
        # The finished column is an array from the start: it pickles as one
        # copy, and the parent unpickles no float objects one by one.
        self.batch = ResultBatch(os.getpid(), finished=array("d"))
        self.size = 0  # estimated encoded bytes of the values sized so far
        self.checked = 0  # values sized so far
        # Sizing a value costs as much as the rest of the hot loop, so only
        # the last value before each check is sized, and stands for the
        # values since the check before. The first value is sized at once.
        self.next_check = -math.inf
        self.deadline = math.inf  # when the batch is older than the latency bound

    def open(self, started: float) -> tuple[ResultBatch, int, float]:
        """Record when the next job starts; return the batch, its length and the next check time.

        The batch's clock starts with its first job.
        """
        batch = self.batch
        count = len(batch.values)
        if not count:
            self.deadline = started + self.latency
        batch.starts[count] = started
        return batch, count, self.next_check

    def add_ids(self, ids: range | list[int]) -> None:
        """Append the ids of the jobs whose values were appended since the last call.

        Consecutive ids stay a ``range``, which pickles in a few bytes
        instead of one integer a job.
        """
        batch = self.batch
        before = batch.job_ids
        if not before:
            batch.job_ids = ids
        elif type(before) is range and type(ids) is range and before.stop == ids.start:
            batch.job_ids = range(before.start, ids.stop)
        else:
            if type(before) is range:
                before = batch.job_ids = list(before)
            before.extend(ids)

    # NOTE: the thread that runs jobs also flushes, so results held in a batch
    # wait while the next job runs: a job far longer than batch_latency
    # delays the results before it until it ends.
    def check(self, now: float) -> float:
        """Size the values added since the last check and flush a full or old batch.

        Returns the time of the next check: the estimated time until the
        batch is full, but no more than the batch's age, because the first
        jobs' times predict the rate poorly. The wait is at least an eighth
        of the age, so a batch may pass ``batch_bytes`` by about that share.
        No check comes later than the batch's deadline, and when fewer than
        ``_CHECK_EACH_BELOW`` values of the last one's size fill the batch,
        every job is checked.
        """
        values = self.batch.values
        added = len(values) - self.checked
        estimate = estimate_size(values[-1]) if values else 1
        self.size += added * estimate
        if added and estimate >= LEND_MIN_BYTES and self._move_last(values):
            # The message refers to the array in the ring instead of copying it.
            self.size -= values[-1].nbytes
        self.checked = len(values)
        in_ring = self._ring.tail - self._ring.sent
        # A job slower than the latency bound passes the deadline on its own,
        # so its result goes out now instead of waiting for the next one.
        if self.size >= self.batch_bytes or now >= self.deadline or in_ring >= self._ring_batch_bytes:
            self.flush()
            return self.next_check
        if in_ring:
            # Arrays wait in the ring: each job is checked, so that each large
            # array moves there as soon as its job returns it.
            return now

        values_to_full = (self.batch_bytes - self.size) / max(estimate, 1)
        if values_to_full < _CHECK_EACH_BELOW:
            # A few more values fill the batch, and jobs that turn faster than
            # the first ones would pass far beyond it before a timed check.
            return now
        age = now - (self.deadline - self.latency)
        seconds_to_full = values_to_full * age / self.checked
        return min(self.deadline, now + min(age, max(seconds_to_full, age / 8)))

    def _move_last(self, values: list[Any]) -> bool:
        """Move the last value into the ring if it is a numpy array; return whether it lies there.

        Copied right away, the job's own array is freed before the next job
        runs, and the allocator hands the same memory to that job instead of
        faulting in fresh pages. A batch can then carry several large arrays
        in one message, up to a quarter of the region.
        """
        value = values[-1]
        if self.folder is not None or type(value) is not np.ndarray:
            return False
        if self._holds(value.__array_interface__["data"][0], value.nbytes) is not None:
            # From shared_array: already in the ring.
            return True

        # Waiting for ring space is no job, as in flush: the parent's
        # timeout clock stops until the next job starts.
        self._ring.set_running(None)
        try:
            moved = sharedarray.ring_copy(value, self.allocate)
        finally:
            self._ring.set_busy()
        if moved is None:
            return False
        values[-1] = moved
        return True

    def add(
        self,
        job_id: int,
        value: Any,
        started: float,
        finished: float,
        error: tuple[str, str, str] | None,
    ) -> None:
        """Add one result; flush if the batch is full, old, or the job was slow."""
        batch, _, _ = self.open(started)
        if error is None and self.folder is not None:
            value, error = self.folder.add(value)
        if error is not None:
            batch.errors[len(batch.values)] = error
        self.add_ids(range(job_id, job_id + 1))
        batch.values.append(value)
        batch.finished.append(finished)
        self.next_check = self.check(finished)

    def flush(self) -> None:
        """Write the pending batch into the ring and send its descriptor."""
        batch = self.batch
        if not batch.job_ids:
            return
        # Writing a batch is no job: a worker that dies or waits for ring
        # space now is charged for the jobs it started, not for the last one,
        # and the parent's timeout clock does not run meanwhile.
        self._ring.set_running(None)
        if self.folder is not None:
            batch.partials = self.folder.take()
        self._new_batch()

        ring = self._ring
        message = _encode_batch(batch, self._locate if self._arrays else None)
        self._arrays.clear()
        try:
            reserved = ring.reserve(message.size, self._alive) if ring.fits(message.size) else None
            if reserved is None:
                # Too large for the region, or its space is kept by views the
                # parent lent out, which may never be freed.
                self._send_in_segment(message, len(batch))
                return
            start, target = reserved
            with target:
                message.write_into(target)
            end = start + message.size
            ring.commit(end)
            ring.sent = end
            self._conn.send(("ring", start, end, len(batch)))
        finally:
            message.release()

    def _send_in_segment(self, message: Any, count: int) -> None:
        # The message is larger than the region, than what its arrays leave
        # free, or than what lent views leave free. It goes in a segment of
        # its own, which the parent unlinks after reading, so it never waits
        # for ring space that cannot exist. The parent then frees the arrays'
        # bytes up to ``release``. The next such segment waits until the
        # parent has read the last, so shared memory stays bounded when
        # every result is large.
        last = self._last_segment
        if last is not None:
            self._ring.wait_until(lambda: not segment_exists(last), self._alive)
        name = f"{self._prefix}{self._segments}"
        self._last_segment = name
        self._segments += 1
        segment = create_segment(name, message.size)
        try:
            with segment_buffer(segment)[: message.size] as target:
                message.write_into(target)
        finally:
            segment.close()
        ring = self._ring
        release = 0 if ring.sent == ring.tail else ring.tail
        ring.sent = ring.tail
        self._conn.send(("segment", name, message.size, count, release))

    def allocate(self, nbytes: int) -> memoryview | None:
        """Reserve ring bytes for an array the running job returns; ``None`` if they do not fit.

        The array's bytes lie before the message of the batch that carries
        it, and the parent frees them with that message. Folding workers get
        ``None``, because an accumulator may keep a value after the message
        frees its bytes.
        """
        if self.folder is not None or threading.get_ident() != self._thread:
            return None
        reserved = self._ring.allocate(nbytes, self._alive)
        if reserved is None:
            return None
        position, view = reserved
        self._arrays.append((position, nbytes, self._ring.address + position % self._ring.capacity))
        return view

    def _locate(self, buffer: memoryview) -> int | None:
        """Return the ring position of a buffer inside an array from ``allocate``, else ``None``."""
        try:
            address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        except (TypeError, ValueError):
            # Read-only or empty: not a view that allocate handed out as is.
            return None
        return self._holds(address, buffer.nbytes)

    def _holds(self, address: int, nbytes: int) -> int | None:
        """Return the ring position of ``nbytes`` at ``address`` if ``allocate`` reserved them, else ``None``."""
        for position, size, base in self._arrays:
            if base <= address and address + nbytes <= base + size:
                return position + address - base
        return None


def _encode_batch(batch: ResultBatch, locate: RingLocator | None) -> EncodedMessage:
    try:
        return encode_message(batch, locate)
    except Exception:  # noqa: BLE001 - any pickling error: find the values that caused it
        pass

    # Some value does not pickle: fail just those jobs and keep the rest.
    for i, value in enumerate(batch.values):
        if i in batch.errors:
            continue
        try:
            # The same pickler as for the batch, so a value it accepts passes here.
            encode_message(value).release()
        except Exception as exc:  # noqa: BLE001 - the value fails its job, whatever the error
            batch.values[i] = None
            batch.errors[i] = (
                "syncagg.UnpicklableResult",
                f"the function returned a {type(value).__qualname__}, which cannot be pickled: {exc}; "
                "return plain data (dicts, lists, numbers, strings, numpy arrays)",
                "",
            )
    return _encode_deeper(batch, locate)


# Levels that the batch adds above each value when it is pickled.
_BATCH_DEPTH = 16


def _encode_deeper(batch: ResultBatch, locate: RingLocator | None) -> EncodedMessage:
    """Encode a batch whose values each pickle alone, allowing the levels the batch adds.

    A value nested close to the recursion limit pickles alone but not a few
    levels down inside the batch. Without the extra levels the worker died.
    """
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + _BATCH_DEPTH)
    try:
        return encode_message(batch, locate)
    finally:
        sys.setrecursionlimit(limit)
