"""Single-producer, single-consumer byte rings in one shared-memory segment.

Each worker owns one region of the segment, so no lock is ever shared
between processes and a worker killed in the middle of a write leaves
nothing held. Byte layout of region ``i``, which starts at
``i * (HEADER_SIZE + capacity)``::

    +0     u64 head      bytes the parent has released; written by the parent only
    +64    u64 running   id + 1 of the job the worker is running, 0 when idle;
                         written by the worker only
    +72    u64 started   id + 1 of the last job the worker started, 0 before
                         its first; written by the worker only
    +128   data          ``capacity`` bytes of messages

Positions are absolute byte counts that only grow, so ``tail - head`` is
the number of bytes in use. A message is always contiguous: when it does not
fit before the end of the data area, the writer skips to the start of the
area, and the skipped bytes are released together with the message. The
fields sit on separate 64-byte lines so the two processes do not contend
for one cache line.

Before each job the worker stores ``running`` and ``started`` with one
``struct`` call, and when it runs out of jobs or writes a batch it clears
``running`` alone. After a worker dies, the two fields tell which of its jobs
had started: the running one, or every job up to the last started one.

The tail lives in the worker's memory only. The parent learns where a
message lies from the descriptor that the worker sends after writing it, so
a message that a dying worker half wrote is never read.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

__all__ = ["HEADER_SIZE", "JOB_OFFSET", "RingReader", "RingWriter", "region_offset"]

HEADER_SIZE = 128
_HEAD = 0
# ``running`` and ``started`` are adjacent so one pack_into stores both.
JOB_OFFSET = 64
_RUNNING = JOB_OFFSET
_STARTED = JOB_OFFSET + 8
_U64 = struct.Struct("<Q")
_JOB = struct.Struct("<QQ")

# A full ring is polled with a sleep that doubles up to this bound, so a
# blocked worker wakes at most a few hundred times a second.
_MAX_SLEEP = 0.005


def region_offset(index: int, capacity: int) -> int:
    """Return the byte offset of region ``index`` in the segment."""
    return index * (HEADER_SIZE + capacity)


class RingWriter:
    """The worker's end of one region: reserves space and writes messages."""

    def __init__(self, buffer: memoryview, index: int, capacity: int, start: int) -> None:
        base = region_offset(index, capacity)
        self._header = buffer[base : base + HEADER_SIZE]
        self._data = buffer[base + HEADER_SIZE : base + HEADER_SIZE + capacity]
        self.capacity = capacity
        self.tail = start
        self.stall_seconds = 0.0
        # For the worker's hot loop: publish_job(header, JOB_OFFSET, job_id + 1,
        # job_id + 1) does what set_running(job_id) does, without a method call.
        self.header = self._header
        self.publish_job = _JOB.pack_into

    def set_running(self, job_id: int | None) -> None:
        """Publish the job the worker is about to run, or clear ``running`` with ``None``.

        ``None`` leaves ``started`` as it is, so the parent still learns
        which jobs had started if the worker dies while idle.
        """
        if job_id is None:
            _U64.pack_into(self._header, _RUNNING, 0)
        else:
            _JOB.pack_into(self._header, JOB_OFFSET, job_id + 1, job_id + 1)

    def reserve(self, size: int, alive: Callable[[], bool]) -> tuple[int, memoryview]:
        """Wait for ``size`` contiguous bytes; return their position and a view.

        Blocks while the ring is full (backpressure). ``alive`` is polled
        while waiting; when it returns False the wait ends with
        ``ConnectionError`` so a worker whose parent died does not wait forever.
        """
        if size > self.capacity:
            raise ValueError(f"message of {size} bytes exceeds the ring region of {self.capacity}")

        offset = self.tail % self.capacity
        start = self.tail
        if offset + size > self.capacity:
            start += self.capacity - offset
            offset = 0

        self._wait_for_space(start + size, alive)
        return start, self._data[offset : offset + size]

    def commit(self, end: int) -> None:
        """Advance the tail past a message that has been written."""
        self.tail = end

    def _has_space(self, end: int) -> bool:
        # Bytes skipped before a wrapped message were never written. Once the
        # parent has released every message (head == tail), the whole area is
        # free even when ``end - head``, which counts the skipped bytes,
        # exceeds the capacity. Without this case a message larger than both
        # the skipped bytes and the bytes before the tail would wait forever.
        head = self._head()
        return end - head <= self.capacity or head >= self.tail

    def _wait_for_space(self, end: int, alive: Callable[[], bool]) -> None:
        if self._has_space(end):
            return

        began = time.perf_counter()
        sleep = 0.0001
        while not self._has_space(end):
            if not alive():
                raise ConnectionError("the parent process is gone")
            time.sleep(sleep)
            sleep = min(sleep * 2, _MAX_SLEEP)
        self.stall_seconds += time.perf_counter() - began

    def _head(self) -> int:
        head: int = _U64.unpack_from(self._header, _HEAD)[0]
        return head

    def release(self) -> None:
        """Drop the views into the segment so it can be closed."""
        self._header.release()
        self._data.release()


class RingReader:
    """The parent's end of one region: reads messages and releases space."""

    def __init__(self, buffer: memoryview, index: int, capacity: int) -> None:
        base = region_offset(index, capacity)
        self._header = buffer[base : base + HEADER_SIZE]
        self._data = buffer[base + HEADER_SIZE : base + HEADER_SIZE + capacity]
        self.capacity = capacity

    @property
    def head(self) -> int:
        """Bytes released so far; a replacement worker starts writing here."""
        head: int = _U64.unpack_from(self._header, _HEAD)[0]
        return head

    def running_job(self) -> int | None:
        """Return the id of the job the worker is running, or ``None`` when it is idle."""
        value: int = _U64.unpack_from(self._header, _RUNNING)[0]
        return None if value == 0 else value - 1

    def started_job(self) -> int | None:
        """Return the id of the last job the worker started, or ``None`` before its first."""
        value: int = _U64.unpack_from(self._header, _STARTED)[0]
        return None if value == 0 else value - 1

    def clear_jobs(self) -> None:
        """Reset the running and started jobs before a replacement worker takes the region."""
        _JOB.pack_into(self._header, JOB_OFFSET, 0, 0)

    def view(self, start: int, end: int) -> memoryview:
        """Return a view of the message stored at absolute ``start`` to ``end``."""
        offset = start % self.capacity
        return self._data[offset : offset + (end - start)]

    def release_to(self, end: int) -> None:
        """Free every byte before absolute position ``end``.

        NOTE: this store is ordered after the reads of the message only by
        the processor's memory model; x86 guarantees that order, and on weaker
        models the interpreter's work between the copy and this store is
        what keeps it in practice.
        """
        _U64.pack_into(self._header, _HEAD, end)

    def release(self) -> None:
        """Drop the views into the segment so it can be closed."""
        self._header.release()
        self._data.release()
