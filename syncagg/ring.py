"""Single-producer, single-consumer byte rings in one shared-memory segment.

Each worker owns one region of the segment, so no lock is ever shared
between processes and a worker killed in the middle of a write leaves
nothing held. Byte layout of region ``i``, which starts at
``i * (HEADER_SIZE + capacity)``::

    +0     u64 head      bytes the parent has released; written by the parent only
    +64    u64 started   id + 1 of the last job the worker started, 0 before
                         its first; written by the worker only
    +72    u64 busy      1 while the worker runs jobs, 0 while it is idle or
                         writes a batch; written by the worker only
    +80    u64 wanted    1 + the head the worker waits for while the region
                         is full, else 0; written by the worker only
    +88    u64 held      1 while a view that the parent lent out keeps the
                         head back after the collector has handled its
                         message, else 0; written by the parent only
    +128   data          ``capacity`` bytes of messages

Positions are absolute byte counts that only grow, so ``tail - head`` is
the number of bytes in use. A message is always contiguous: when it does not
fit before the end of the data area, the writer skips to the start of the
area, and the skipped bytes are released together with the message. It
also skips there when the parent has freed every byte, so that a ring the
parent keeps empty reuses the same few cached MiBs. The
fields sit on separate 64-byte lines so the two processes do not contend
for one cache line.

Before each job the worker stores the job's id in ``started``, one native
8-byte store. ``busy`` changes only when a run of jobs starts or stops, so
the running job is ``started`` while ``busy`` is 1. After a worker dies the
two fields tell which of its jobs had started: the running one, or every job
up to the last started one.

A worker that finds its region full publishes ``wanted`` and waits on an
event; after each release the parent reads ``wanted`` and, once the head has
reached it, sends the worker a message that sets the event. The worker's
store to ``wanted`` and its load of the head can be reordered by the
processor (x86 allows a store to pass a later load), and so can the parent's
store to the head and its load of ``wanted``; both can then miss each other.
The worker therefore waits with a timeout that doubles up to ``_MAX_SLEEP``
and checks the head again, so a missed wake-up costs latency only.

The tail lives in the worker's memory only. The parent learns where a
message lies from the descriptor that the worker sends after writing it, so
a message that a dying worker half wrote is never read.

The parent may lend out views of a message's buffers instead of copying
them (see ``Loan``). Space is still freed in order, so the head stops at the
first message with a view alive, and messages after it are freed when it
is. A view that the caller keeps for good would then stop its worker. So
the parent raises ``held`` when a view outlives the collector's handling of
its message, and a worker that finds the region full while ``held`` is
raised sends its message in a segment of its own instead of waiting.
"""

from __future__ import annotations

import collections
import ctypes
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["HEADER_SIZE", "Loan", "RingReader", "RingWriter", "region_offset"]

HEADER_SIZE = 128
_HEAD = 0
_STARTED = 64
_BUSY = 72
_WANTED = 80
_HELD = 88
_U64 = struct.Struct("<Q")
_JOBS = struct.Struct("<QQ")

# Arrays allocated in a region start on this boundary (relative to the data
# area, which the pool places on it too).
_ALIGN = 64

# A worker waiting for space checks the head again after a timeout that
# doubles up to this bound, in case it missed the parent's wake-up.
_MAX_SLEEP = 0.005

# A worker waiting for space requests a wake-up once 1 / _WAKE_SPARE of the
# region is free beyond what its message needs.
_WAKE_SPARE = 4


def _aligned(position: int) -> int:
    return -(-position // _ALIGN) * _ALIGN


def region_offset(index: int, capacity: int) -> int:
    """Return the byte offset of region ``index`` in the segment."""
    return index * (HEADER_SIZE + capacity)


class RingWriter:
    """The worker's end of one region: reserves space and writes messages."""

    def __init__(
        self,
        buffer: memoryview,
        index: int,
        capacity: int,
        start: int,
        space: threading.Event | None = None,
    ) -> None:
        base = region_offset(index, capacity)
        self._header = buffer[base : base + HEADER_SIZE]
        self._data = buffer[base + HEADER_SIZE : base + HEADER_SIZE + capacity]
        self.capacity = capacity
        self.tail = start
        self.stall_seconds = 0.0
        # Set by the worker's task reader when the parent reports released
        # space; without it a full region is polled with sleeps.
        self._space = space
        # Native u64 views: ``jobs[0] = job_id + 1`` is the hot loop's whole
        # publication, one aligned 8-byte store.
        self.jobs = self._header[_STARTED:_WANTED].cast("Q")
        self._wanted = self._header[_WANTED : _WANTED + 8].cast("Q")
        self._held = self._header[_HELD : _HELD + 8].cast("Q")
        # Every byte before ``sent`` belongs to a message the parent was told
        # about, so the parent frees it in time. Bytes from ``sent`` to the
        # tail are arrays allocated for a batch not sent yet.
        self.sent = start
        # Bytes before the floor are free: the parent had freed everything
        # when the writer last skipped to the start of the area. Not
        # ``start``: a replacement worker starts after bytes that views the
        # parent lent out may still use.
        self._floor = 0
        # The address of the data area, to find which buffers lie in it.
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self._data))

    def set_running(self, job_id: int | None) -> None:
        """Publish the job the worker is about to run, or mark it idle with ``None``.

        ``None`` leaves ``started`` as it is, so the parent still learns
        which jobs had started if the worker dies while idle.
        """
        if job_id is None:
            self.jobs[1] = 0
        else:
            self.jobs[0] = job_id + 1
            self.jobs[1] = 1

    def set_busy(self) -> None:
        """Mark the start of a run of jobs, each published by ``jobs[0] = job_id + 1``."""
        self.jobs[1] = 1

    def reserve(self, size: int, alive: Callable[[], bool]) -> tuple[int, memoryview] | None:
        """Wait for ``size`` contiguous bytes; return their position and a view.

        Blocks while the ring is full (backpressure). Returns ``None`` when
        the space is kept by a view the parent lent out (``held``), which
        may never be freed. ``alive`` is polled while waiting; when it
        returns False the wait ends with ``ConnectionError`` so a worker
        whose parent died does not wait forever.
        """
        if size > self.capacity:
            raise ValueError(f"message of {size} bytes exceeds the ring region of {self.capacity}")

        # Messages start on a 64-byte boundary, like the buffers inside them,
        # so arrays that the parent lends as views of the ring are aligned.
        start = _aligned(self.tail)
        offset = start % self.capacity
        area_start = start + self.capacity - offset
        freed = self._freed() >= self.tail
        if offset and (offset + size > self.capacity or freed):
            # Skip to the start of the area when the message does not fit
            # before its end, and also when every byte is free: the caches
            # likely still contain the first bytes, and not the ones ahead.
            # A 1 MiB copy into a 32 MiB area took 90 us when it went round
            # the whole area, 25 us when it reused the first MiBs.
            if freed:
                # Everything before the tail is free, so ``sent`` equals the
                # tail, and the bytes skipped are free too.
                self.sent = self._floor = area_start
            start = area_start
            offset = 0

        if not self._wait_for_space(start + size, alive):
            return None
        return start, self._data[offset : offset + size]

    def commit(self, end: int) -> None:
        """Advance the tail past a message that has been written."""
        self.tail = end

    def fits(self, size: int) -> bool:
        """Return whether ``size`` bytes at the tail fit once the parent frees every sent message.

        Bytes of unsent arrays (from ``sent`` to the tail) stay in use until a
        message that refers to them is sent, so a reservation that needs them
        would wait forever.
        """
        return self._fits(_aligned(self.tail), size)

    def _fits(self, tail: int, size: int) -> bool:
        if size > self.capacity:
            return False
        if self.sent == tail:
            # Once the parent frees everything the whole area is free (see _has_space).
            return True
        offset = tail % self.capacity
        start = tail if offset + size <= self.capacity else tail + self.capacity - offset
        return start + size - self.sent <= self.capacity

    def allocate(self, size: int, alive: Callable[[], bool]) -> tuple[int, memoryview] | None:
        """Reserve ``size`` bytes on a 64-byte boundary for an array, before the next message.

        Returns the absolute position and a writable view, or ``None`` when
        the bytes would not fit beside the arrays not sent yet or are kept
        by a view the parent lent out. The bytes skipped to reach the
        boundary are freed with the next message, like those skipped at the
        end of the area.
        """
        # Bytes skipped for alignment are unsent bytes too, so _fits judges
        # the aligned tail.
        if not self._fits(_aligned(self.tail), size):
            return None
        reserved = self.reserve(size, alive)
        if reserved is None:
            return None
        start, view = reserved
        self.commit(start + size)
        return start, view

    def _has_space(self, end: int) -> bool:
        # Bytes skipped before a wrapped message were never written. Once the
        # parent has released every message (head == tail), the whole area is
        # free even when ``end - head``, which counts the skipped bytes,
        # exceeds the capacity. Without this case a message larger than both
        # the skipped bytes and the bytes before the tail would wait forever.
        head = self._freed()
        return end - head <= self.capacity or head >= self.tail

    def _wait_for_space(self, end: int, alive: Callable[[], bool]) -> bool:
        """Wait until the bytes before ``end`` are free; ``False`` if a lent view keeps them."""
        if self._has_space(end):
            return True

        # The head at which the message fits with a quarter of the region to
        # spare: ``end - capacity`` frees just enough bytes, and ``tail``
        # drains the region (see _has_space). The parent wakes the worker
        # once it has released up to there. The spare quarter makes one
        # wake-up serve several messages when the parent is the slower side.
        # The parent frees no byte past ``sent``: the rest are unsent arrays.
        wanted = end - self.capacity + self.capacity // _WAKE_SPARE
        self._wanted[0] = min(wanted, self.sent) + 1
        try:
            self.wait_until(lambda: self._has_space(end) or self._held[0] != 0, alive)
        finally:
            self._wanted[0] = 0
        return self._has_space(end)

    def wait_until(self, ready: Callable[[], bool], alive: Callable[[], bool]) -> None:
        """Wait until ``ready()`` is true; the parent's wake-ups end a wait early.

        Raises ``ConnectionError`` if ``alive()`` turns false meanwhile. The
        time spent counts as a stall.
        """
        began = time.perf_counter()
        timeout = 0.0001
        while not ready():
            if not alive():
                raise ConnectionError("the parent process is gone")
            if self._space is None:
                time.sleep(timeout)
            else:
                # Cleared before the check, so a wake-up after it is not lost.
                self._space.clear()
                if ready():
                    break
                self._space.wait(timeout)
            timeout = min(timeout * 2, _MAX_SLEEP)
        self.stall_seconds += time.perf_counter() - began

    def _freed(self) -> int:
        """Return the position before which every byte is free."""
        return max(self._head(), self._floor)

    def _head(self) -> int:
        head: int = _U64.unpack_from(self._header, _HEAD)[0]
        return head

    def release(self) -> None:
        """Drop the views into the segment so it can be closed."""
        self.jobs.release()
        self._wanted.release()
        self._held.release()
        self._header.release()
        self._data.release()


class Loan:
    """The buffers of one message that the parent lent out as views instead of copying.

    ``lend`` wraps a view of shared memory in a ``pyarrow.Buffer``. numpy
    arrays, Arrow arrays and ``memoryview`` objects built on it keep it
    alive, so a weak reference to it reports when the last of them is gone.
    The message's bytes are freed once every lent buffer is gone and the
    parent has closed the loan, after decoding.
    """

    __slots__ = ("end", "_alive", "_closed", "_reader", "_refs")

    def __init__(self, end: int, reader: RingReader | None) -> None:
        self.end = end
        self._reader = reader
        # Weak references to the lent buffers, kept so their callbacks run.
        self._refs: list[weakref.ref[Any]] = []
        self._alive = 0
        self._closed = reader is None

    @property
    def settled(self) -> bool:
        """Whether the loan is closed and no lent buffer is alive."""
        return self._closed and self._alive == 0

    def lend(self, view: memoryview) -> Any:
        """Return a buffer over ``view`` whose death the loan notices."""
        import pyarrow as pa

        buffer = pa.py_buffer(view)
        self._refs.append(weakref.ref(buffer, self._returned))
        self._alive += 1
        return buffer

    def close(self) -> None:
        """Stop lending: the bytes are freed once the buffers lent so far are gone."""
        assert self._reader is not None
        with self._reader.lock:
            self._closed = True
            self._reader.free_settled()

    def _returned(self, _: weakref.ref[Any]) -> None:
        # Runs in whichever thread dropped the last reference to the buffer.
        # It also runs in a forked worker that frees its copy of the parent's
        # objects, which must neither write the parent's header nor wait for
        # a lock that a parent thread held at the fork.
        assert self._reader is not None
        if not self._reader.in_owner:
            return
        with self._reader.lock:
            self._alive -= 1
            self._reader.free_settled()


class RingReader:
    """The parent's end of one region: reads messages and releases space.

    Space is freed in message order. Without loans, releasing a message
    stores its end as the head at once. With loans, messages wait in
    ``_pending`` until every one before them is settled. A lock guards that
    list, because a lent buffer may die in any thread.
    """

    def __init__(self, buffer: memoryview, index: int, capacity: int) -> None:
        base = region_offset(index, capacity)
        self._header = buffer[base : base + HEADER_SIZE]
        self._data = buffer[base + HEADER_SIZE : base + HEADER_SIZE + capacity]
        self.capacity = capacity
        # The end of the last message read; a replacement worker writes from
        # here, because the bytes before it may still be lent out.
        self.read_end = self.head
        self._pending: collections.deque[Loan] = collections.deque()
        # Reentrant: the collection of a cycle that contains a lent buffer
        # may run a callback while this thread holds the lock.
        self.lock = threading.RLock()
        self._released = False
        self._pid = os.getpid()

    @property
    def head(self) -> int:
        """Bytes released so far."""
        head: int = _U64.unpack_from(self._header, _HEAD)[0]
        return head

    @property
    def in_owner(self) -> bool:
        """Whether this is the process that created the reader, not a forked copy of it."""
        return os.getpid() == self._pid

    def _store_head(self, end: int) -> None:
        # Never backwards: a callback that runs inside this lock's holder (a
        # garbage collection) may already have stored a later end.
        if end > self.head:
            _U64.pack_into(self._header, _HEAD, end)

    @property
    def lent(self) -> bool:
        """Whether a lent buffer still keeps bytes of this region."""
        return bool(self._pending)

    def running_job(self) -> int | None:
        """Return the id of the job the worker is running, or ``None`` when it is idle."""
        started, busy = _JOBS.unpack_from(self._header, _STARTED)
        return started - 1 if busy and started else None

    def started_job(self) -> int | None:
        """Return the id of the last job the worker started, or ``None`` before its first."""
        started: int = _U64.unpack_from(self._header, _STARTED)[0]
        return None if started == 0 else started - 1

    def clear_jobs(self) -> None:
        """Reset the started job and the busy flag before a replacement worker takes the region."""
        _JOBS.pack_into(self._header, _STARTED, 0, 0)
        _U64.pack_into(self._header, _WANTED, 0)

    def worker_waits(self) -> bool:
        """Return whether the worker waits for space that the released bytes now provide."""
        wanted: int = _U64.unpack_from(self._header, _WANTED)[0]
        return wanted != 0 and self.head + 1 >= wanted

    def view(self, start: int, end: int) -> memoryview:
        """Return a view of the message stored at absolute ``start`` to ``end``."""
        offset = start % self.capacity
        return self._data[offset : offset + (end - start)]

    def release_to(self, end: int) -> None:
        """Free every byte before absolute position ``end``, once the loans before it are settled.

        NOTE: this store is ordered after the reads of the message only by
        the processor's memory model; x86 guarantees that order, and on weaker
        models the interpreter's work between the copy and this store is
        what keeps it in practice.
        """
        freed = Loan(end, None)
        with self.lock:
            self.read_end = max(self.read_end, end)
            if self._pending:
                self._pending.append(freed)
            elif not self._released:
                self._store_head(end)
        # A callback during the append may have emptied the list before it.
        self.free_settled()

    def lend(self, end: int) -> Loan:
        """Open a loan for the message that ends at ``end``; its bytes stay until it is settled."""
        loan = Loan(end, self)
        with self.lock:
            self.read_end = max(self.read_end, end)
            self._pending.append(loan)
        return loan

    def free_settled(self) -> None:
        """Free the messages at the front whose loans are settled."""
        if not self.in_owner:
            return
        with self.lock:
            head = None
            while self._pending and self._pending[0].settled:
                head = self._pending.popleft().end
            if self._released:
                return
            if head is not None:
                self._store_head(head)
            if not self._pending:
                _U64.pack_into(self._header, _HELD, 0)

    def hold(self) -> bool:
        """Tell the worker, after the collector handled a message, whether a loan keeps the head back.

        Returns whether the flag went up just now.
        """
        with self.lock:
            if self._released:
                return False
            held: int = _U64.unpack_from(self._header, _HELD)[0]
            _U64.pack_into(self._header, _HELD, 1 if self._pending else 0)
            return bool(self._pending) and not held

    def release(self) -> None:
        """Drop the views into the segment so it can be closed."""
        with self.lock:
            self._released = True
        self._header.release()
        self._data.release()
