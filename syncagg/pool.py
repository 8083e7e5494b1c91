"""Worker processes, their pipes, and the ring segment they share.

The pool owns every process and segment it creates: ``close()`` stops the
workers, then unlinks the ring and any one-off segment a worker left behind.
A worker that dies is replaced in the same slot; the replacement starts
writing after the last message the parent read, so no byte that the dead
worker wrote after that point is ever read, and no byte lent out before it
is overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from syncagg.combiners import Combiner
from syncagg.errors import WorkerStartError
from syncagg.names import qualified_name
from syncagg.ring import HEADER_SIZE, RingReader
from syncagg.segments import (
    attach_segment,
    check_shm_space,
    create_segment,
    new_run_prefix,
    remove_segments,
    segment_buffer,
    unlink_segment,
)
from syncagg.transport import ResultBatch, decode_message
from syncagg.worker import SPACE_MESSAGE, STOP_SIGNALS, WorkerSpec, worker_main

__all__ = ["Slot", "UndecodableBatch", "WorkerPool"]

logger = logging.getLogger("syncagg.pool")

_STOP_TIMEOUT = 5.0


@dataclass
class Slot:
    """One worker position: its process, its pipes and its ring region."""

    index: int
    process: BaseProcess
    tasks: Connection
    results: Connection
    ring: RingReader
    ready: bool = False


class WorkerPool:
    """Start, replace and stop worker processes that share one ring segment."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        workers: int,
        region_bytes: int,
        batch_bytes: int,
        batch_latency: float,
        context: BaseContext | None = None,
        combiner: Combiner | None = None,
    ) -> None:
        self._fn = fn
        self._combiner = combiner
        self._context = context or multiprocessing.get_context()
        # A multiple of 64, so that every region's data area, and the arrays
        # that shared_array places on 64-byte boundaries in it, are aligned.
        self._region_bytes = region_bytes - region_bytes % 64
        self._batch_bytes = batch_bytes
        self._batch_latency = batch_latency
        self.prefix = new_run_prefix()
        # Set by the caller when the collector drops each value once it has
        # handled it: large buffers are then lent as views of the ring.
        self.lend = False
        self._held_logged = False

        size = workers * (HEADER_SIZE + self._region_bytes)
        check_shm_space(size)
        self._segment = create_segment(f"{self.prefix}ring", size)
        self.slots: list[Slot] = []
        self._closed = False
        try:
            for index in range(workers):
                self._start(index, start=0)
        except BaseException:
            # A fork that fails (EAGAIN at a process limit) must not leave the
            # workers started so far, or the segment, behind.
            self.terminate()
            self.close()
            raise

    def _start(self, index: int, start: int, ring: RingReader | None = None) -> Slot:
        task_reader, task_writer = self._context.Pipe(duplex=False)
        _widen(task_writer)
        result_reader, result_writer = self._context.Pipe(duplex=False)
        spec = WorkerSpec(
            fn=self._fn,
            slot=index,
            ring_name=self._segment.name,
            capacity=self._region_bytes,
            start=start,
            tasks=task_reader,
            results=result_writer,
            batch_bytes=self._batch_bytes,
            batch_latency=self._batch_latency,
            segment_prefix=self.prefix,
            combiner=self._combiner,
            parent_pid=None if self._context.get_start_method() == "forkserver" else os.getpid(),
        )
        process = self._context.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(spec,),
            name=f"syncagg-worker-{index}",
            daemon=True,
        )
        # The slot is recorded before the signals are let through, so a
        # Ctrl-C held back during the start finds the worker in self.slots,
        # where terminate and close stop it and release its view of the ring.
        with _stop_signals_blocked():
            process.start()
            # The child has its own copies now; closing ours lets a pipe report
            # end-of-file when the child dies.
            task_reader.close()
            result_writer.close()
            if ring is None:
                ring = RingReader(segment_buffer(self._segment), index, self._region_bytes)
            slot = Slot(index, process, task_writer, result_reader, ring)
            if index < len(self.slots):
                self.slots[index] = slot
            else:
                self.slots.append(slot)
        logger.debug("started worker %d with pid %s", index, process.pid)
        return slot

    def replace(self, slot: Slot) -> Slot:
        """Start a new worker in the slot of a worker that exited.

        The caller has read every descriptor the dead worker sent, so a
        one-off segment of that worker still linked was never announced: it
        is removed now, or repeated deaths would fill /dev/shm until the run ends.
        """
        slot.process.join()
        left = remove_segments(f"{self.prefix}w{slot.process.pid}-")
        if left:
            logger.info("removed %d unsent segments of dead worker %s", len(left), slot.process.pid)
        slot.process.close()
        slot.tasks.close()
        slot.results.close()
        # The replacement writes after the last message read: bytes before
        # it may still be lent out, and the reader keeps track of them.
        slot.ring.clear_jobs()
        return self._start(slot.index, slot.ring.read_end, slot.ring)

    def read(self, slot: Slot, descriptor: tuple[Any, ...]) -> ResultBatch:
        """Decode the batch that a descriptor points to and free its bytes.

        Raises ``UndecodableBatch`` if the batch does not unpickle here; its
        bytes are freed all the same, so the worker goes on.
        """
        kind = descriptor[0]
        if kind == "ring" and self.lend:
            return self._read_lent(slot, descriptor)
        if kind == "ring":
            _, start, end, count = descriptor
            try:
                with slot.ring.view(start, end) as view:
                    return _decode(view, slot, count)
            finally:
                self._release(slot, end)

        _, name, size, count, release = descriptor
        segment = attach_segment(name)
        try:
            with segment_buffer(segment)[:size] as view:
                return _decode(view, slot, count)
        finally:
            segment.close()
            segment.unlink()
            # Frees the arrays in the ring that the segment's message referred
            # to. The wake-up also ends the wait of a worker whose next
            # segment waits until this one is gone.
            self._release(slot, release, wake=True)

    def _read_lent(self, slot: Slot, descriptor: tuple[Any, ...]) -> ResultBatch:
        """Decode a batch whose large buffers stay in the ring as lent views."""
        _, start, end, count = descriptor
        loan = slot.ring.lend(end)
        try:
            # Not released here: the lent views are slices of it.
            return _decode(slot.ring.view(start, end), slot, count, loan.lend)
        finally:
            loan.close()

    def settle(self, slot: Slot) -> None:
        """Report to the worker whether lent views outlived the batch, and wake it if it waits.

        The collector calls this after it handled a batch of the slot, once
        the batch is gone. A view still alive then may be kept for good, so
        the worker stops waiting for the bytes it keeps.
        """
        if slot.ring.hold() and not self._held_logged:
            self._held_logged = True
            logger.info(
                "results of worker %d are still referenced after the strategy handled them; "
                "while they are, its batches travel in one-off segments, which is slower. "
                "A strategy that keeps values should keep copies (numpy.array(value))",
                slot.index,
            )
        if slot.ring.worker_waits():
            _wake(slot)

    def wake_waiting(self) -> None:
        """Wake the workers whose wait for space lent views freed after their last batch."""
        for slot in self.slots:
            if slot.ring.worker_waits():
                _wake(slot)

    def _release(self, slot: Slot, end: int, wake: bool = False) -> None:
        if end:
            slot.ring.release_to(end)
        if wake or slot.ring.worker_waits():
            _wake(slot)

    def check_start(self, slot: Slot) -> None:
        """Raise ``WorkerStartError`` if the slot's worker exited by itself before it was ready.

        A worker killed by a signal before it was ready, for example by the
        OOM killer or an operator's SIGKILL, does not show whether the
        function can be imported. The caller replaces it like any dead worker.
        """
        if slot.ready:
            return
        # The sentinel reports end-of-file a moment before the process can be
        # reaped, so the exit code is read only after joining.
        slot.process.join()
        code = slot.process.exitcode
        if code is not None and code < 0:
            return
        raise WorkerStartError(
            f"worker process {slot.process.pid} exited with code {code} before it could run "
            f"{qualified_name(self._fn)}; under the {self._context.get_start_method()!r} start "
            "method the function must be importable by module and name, and the main "
            "script must guard its entry point with `if __name__ == \"__main__\":`"
        )

    def close(self) -> None:
        """Stop every worker and remove every segment of this pool; idempotent."""
        if self._closed:
            return
        self._closed = True

        for slot in self.slots:
            # A worker that is already gone cannot take the stop message.
            with contextlib.suppress(OSError):
                slot.tasks.send(None)
        for slot in self.slots:
            self._stop(slot)

        _close_segment(self._segment)
        unlink_segment(self._segment.name)
        leftovers = remove_segments(self.prefix)
        if leftovers:
            logger.debug("removed %d segments left by dead workers", len(leftovers))

    def terminate(self) -> None:
        """Kill every worker at once, for an interrupted run; ``close()`` still follows."""
        if self._closed:
            return
        for slot in self.slots:
            if slot.process.is_alive():
                slot.process.kill()

    def _stop(self, slot: Slot) -> None:
        _wait_for_exit(slot.process, _STOP_TIMEOUT)
        if slot.process.is_alive():
            logger.warning(
                "worker %d (pid %s) did not stop within %.0f s; killing it",
                slot.index,
                slot.process.pid,
                _STOP_TIMEOUT,
            )
            slot.process.kill()
            slot.process.join()

        # Releases the sentinel descriptor now, not when the object is collected.
        slot.process.close()
        slot.tasks.close()
        slot.results.close()
        slot.ring.release()


# Capacity of a task pipe: the bytes of chunks it takes before the parent's send waits.
_TASK_PIPE_BYTES = 1024 * 1024


def _widen(conn: Connection) -> None:
    """Let a task pipe hold ``_TASK_PIPE_BYTES``, so that sending a chunk seldom waits.

    A full pipe makes the collector wait until the worker's task reader
    thread runs. That thread first waits for the worker's main thread to
    release the interpreter lock, up to the switch interval (5 ms) each
    time. With the default 64 KiB, a chunk of 32,768 integers (160 kB
    pickled) stalled the collector for several such waits.
    """
    try:
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, _TASK_PIPE_BYTES)
    except (AttributeError, OSError) as exc:
        # Not Linux, or above the limits in /proc/sys/fs: the default size works, slower.
        logger.debug("the task pipe keeps its default size: %s", exc)


def _wait_for_exit(process: BaseProcess, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``process`` to exit.

    Polls the exit status instead of joining, because ``join`` waits on the
    process's sentinel pipe, which a child that the job forked keeps open
    after the worker itself has exited.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while process.exitcode is None and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Hold back SIGINT and SIGTERM in this thread while a worker starts.

    A forked or spawned child inherits the mask, so a Ctrl-C that reaches the
    process group before ``worker_main`` ignores these signals waits instead
    of interrupting the child's start, where it could leave a lock held. The
    worker unblocks them once it ignores them; here, a signal that arrived
    meanwhile is delivered when the mask is restored.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class UndecodableBatch(Exception):
    """A batch of results that pickled in the worker does not unpickle in the parent.

    ``count`` is the number of results in the batch: the worker's next
    ``count`` jobs, in the order they were sent.
    """

    def __init__(self, count: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__qualname__}: {cause}")
        self.count = count


def _close_segment(segment: shared_memory.SharedMemory) -> None:
    """Close the ring segment, leaving the mapping to the lent views that still use it."""
    try:
        segment.close()
    except BufferError:
        # A lent view outlived the run, for example in the strategy's value.
        # The mapping lives on until the last such view is gone; dropping the
        # segment's own references keeps its close at collection quiet.
        logger.debug("ring segment still mapped by views of results; unmapped when they are gone")
        segment._buf = None  # type: ignore[attr-defined]
        segment._mmap = None  # type: ignore[attr-defined]
        segment.close()


def _decode(
    view: memoryview, slot: Slot, count: int, lend: Callable[[memoryview], Any] | None = None
) -> ResultBatch:
    try:
        batch: ResultBatch = decode_message(view, slot.ring.view, lend)
        return batch
    except BaseException as exc:  # noqa: BLE001 - any unpickling error fails the batch's jobs
        # This runs in the collector thread, where Ctrl-C never arrives, so
        # even SystemExit or KeyboardInterrupt here came from a __reduce__.
        raise UndecodableBatch(count, exc) from exc


def _wake(slot: Slot) -> None:
    """Tell a worker that waits for ring space that the space is free."""
    try:
        slot.tasks.send(SPACE_MESSAGE)
    except OSError:
        # The worker is gone; its sentinel reports it.
        return


def check_picklable(fn: Callable[[Any], Any]) -> None:
    """Raise ``TypeError`` if ``fn`` cannot be sent to a worker process."""
    try:
        pickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001 - any pickling error means the same to the caller
        raise TypeError(
            f"fn={fn!r} cannot be pickled ({exc}); worker processes import it by "
            "module and name, so pass a function defined at the top level of a "
            "module, not a lambda or a nested function"
        ) from None
