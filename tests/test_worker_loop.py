"""The worker's hot loop in this process: ids, values, errors and times stay aligned across flushes."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import pytest

from syncagg.batching import BatchSender
from syncagg.ring import HEADER_SIZE, RingReader, RingWriter
from syncagg.segments import create_segment, new_run_prefix
from syncagg.transport import ResultBatch, decode_message
from syncagg.worker import _run_chunk

CAPACITY = 256 * 1024


def _alive() -> bool:
    return True


def _row_or_fail(x: int) -> dict[str, int]:
    if x % 7 == 3:
        raise ValueError(f"no row for {x}")
    return {"x": x, "double": 2 * x}


@dataclass
class ReadingPipe:
    """Stands in for the result pipe: decodes each batch at once and frees its bytes."""

    reader: RingReader
    batches: list[ResultBatch] = field(default_factory=list)

    def send(self, descriptor: tuple[Any, ...]) -> None:
        kind, start, end, count = descriptor
        assert kind == "ring"
        with self.reader.view(start, end) as view:
            batch = decode_message(view, self.reader.view)
        assert len(batch) == count
        self.batches.append(batch)
        self.reader.release_to(end)


@dataclass(frozen=True)
class Spec:
    results: ReadingPipe
    batch_bytes: int
    batch_latency: float = 60.0
    segment_prefix: str = "syncagg-test-"
    combiner: None = None


@contextlib.contextmanager
def _ring_segment(capacity: int) -> Iterator[shared_memory.SharedMemory]:
    created = create_segment(f"{new_run_prefix()}ring", HEADER_SIZE + capacity)
    try:
        yield created
    finally:
        created.close()
        created.unlink()


@pytest.fixture()
def segment() -> Iterator[shared_memory.SharedMemory]:
    with _ring_segment(CAPACITY) as created:
        yield created


@pytest.mark.parametrize("batch_bytes", [1, 2_000, 1_000_000], ids=["every-job", "small", "large"])
def test_chunks_keep_ids_aligned(segment: shared_memory.SharedMemory, batch_bytes: int) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    pipe = ReadingPipe(reader)
    sender = BatchSender(writer, Spec(pipe, batch_bytes), _alive)  # type: ignore[arg-type]
    # A fresh chunk, then a chunk of retried jobs in no particular order.
    chunks: list[tuple[range | list[int], list[int]]] = [
        (range(0, 500), list(range(0, 500))),
        ([1903, 1901, 1902, 1950], [1903, 1901, 1902, 1950]),
        (range(500, 1500), list(range(500, 1500))),
    ]

    for chunk in chunks:
        _run_chunk(_row_or_fail, chunk, writer, sender)
        assert reader.running_job() == chunk[0][-1]
        writer.set_running(None)
    sender.flush()

    ids = [job_id for batch in pipe.batches for job_id in batch.job_ids]
    expected_ids = [job_id for chunk in chunks for job_id in chunk[0]]
    assert ids == expected_ids
    assert reader.running_job() is None
    assert reader.started_job() == 1499
    if batch_bytes == 1:
        assert [len(batch) for batch in pipe.batches] == [1] * len(expected_ids)
    retried = set(chunks[1][0])
    for batch in pipe.batches:
        # Ids of fresh chunks only travel as one range, whatever chunks they span.
        assert isinstance(batch.job_ids, range) == retried.isdisjoint(batch.job_ids)
        assert len(batch.values) == len(batch.job_ids)
        assert 0 in batch.starts
        assert len(batch.finished) == len(batch.job_ids)
        for i, job_id in enumerate(batch.job_ids):
            assert batch.started_at(i) <= batch.finished[i]
            if i:
                assert batch.started_at(i) >= batch.finished[i - 1]
            if job_id % 7 == 3:
                assert batch.values[i] is None
                assert batch.errors[i][:2] == ("ValueError", f"no row for {job_id}")
            else:
                assert i not in batch.errors
                assert batch.values[i] == {"x": job_id, "double": 2 * job_id}
    writer.release()
    reader.release()


def _slow_first_array(x: int) -> bytes:
    # The first job is slow and the rest are fast, so timing alone would
    # predict far fewer values per batch than arrive before the next check.
    if x == 0:
        time.sleep(0.02)
    return bytes(8_000)


def test_large_values_do_not_overshoot_batch(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    pipe = ReadingPipe(reader)
    sender = BatchSender(writer, Spec(pipe, batch_bytes=32_000, batch_latency=60.0), _alive)  # type: ignore[arg-type]

    _run_chunk(_slow_first_array, (range(200), list(range(200))), writer, sender)
    writer.set_running(None)
    sender.flush()

    sizes = [len(batch) for batch in pipe.batches]
    assert sum(sizes) == 200
    # 8,016 estimated bytes a value: the fourth reaches 32,000.
    assert max(sizes) == 4
    writer.release()
    reader.release()


_MOVED_LENGTH = 8192  # 64 KiB of float64: the smallest array that moves into the ring
_LARGE_CAPACITY = 1024 * 1024
_freed_before_next: list[bool] = []
_last_returned: list[weakref.ref[np.ndarray]] = []


def _array_noting_frees(x: int) -> np.ndarray:
    # Notes whether the array of the job before is gone by now.
    if _last_returned:
        _freed_before_next.append(_last_returned[-1]() is None)
    array = np.full(_MOVED_LENGTH, float(x))
    _last_returned.append(weakref.ref(array))
    return array


@pytest.fixture()
def large_segment() -> Iterator[shared_memory.SharedMemory]:
    with _ring_segment(_LARGE_CAPACITY) as created:
        yield created


def test_arrays_move_into_ring_as_jobs_return(large_segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(large_segment.buf, 0, _LARGE_CAPACITY, start=0)
    reader = RingReader(large_segment.buf, 0, _LARGE_CAPACITY)
    pipe = ReadingPipe(reader)
    sender = BatchSender(writer, Spec(pipe, batch_bytes=1_000_000), _alive)  # type: ignore[arg-type]
    _freed_before_next.clear()
    _last_returned.clear()

    _run_chunk(_array_noting_frees, (range(10), list(range(10))), writer, sender)
    writer.set_running(None)
    sender.flush()

    # Each array is copied into the ring as its job returns, so the job's
    # own array is freed before the next job runs.
    assert _freed_before_next == [True] * 9
    # A quarter of the 1 MiB region fills a batch: four 64 KiB arrays.
    assert [len(batch) for batch in pipe.batches] == [4, 4, 2]
    values = [value for batch in pipe.batches for value in batch.values]
    for x, value in enumerate(values):
        np.testing.assert_array_equal(value, np.full(_MOVED_LENGTH, float(x)))
    writer.release()
    reader.release()


# Elements of one byte and one float64, with 7 bytes of padding between them.
_PADDED = np.dtype([("a", "u1"), ("b", "<f8")], align=True)


def _odd_array(kind: int) -> np.ndarray:
    base = np.arange(_MOVED_LENGTH, dtype=np.float64).reshape(64, 128)
    if kind == 0:
        return base
    if kind == 1:
        return np.asfortranarray(base)
    if kind == 2:
        return base.astype(">f8")
    if kind == 3:
        return base[:, ::2]
    if kind == 4:
        return base.astype(object)
    if kind == 5:
        # Leaves 0xAB bytes in the ring where the next array is written.
        return np.full(_MOVED_LENGTH * 16, 0xAB, dtype=np.uint8)
    return np.zeros(_MOVED_LENGTH, dtype=_PADDED)


def test_arrays_of_every_layout_arrive_intact(segment: shared_memory.SharedMemory) -> None:
    # C-ordered, big-endian and structured arrays move into the ring;
    # Fortran-ordered, strided and object arrays are pickled as they are.
    # All arrive equal, padding bytes included.
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    pipe = ReadingPipe(reader)
    sender = BatchSender(writer, Spec(pipe, batch_bytes=1_000_000), _alive)  # type: ignore[arg-type]

    _run_chunk(_odd_array, (range(7), list(range(7))), writer, sender)
    writer.set_running(None)
    sender.flush()

    values = [value for batch in pipe.batches for value in batch.values]
    assert len(values) == 7
    for kind, value in enumerate(values):
        expected = _odd_array(kind)
        assert value.dtype == expected.dtype
        assert value.shape == expected.shape
        assert value.flags.f_contiguous == expected.flags.f_contiguous
        np.testing.assert_array_equal(value, expected)
        if kind != 4:
            assert value.tobytes() == expected.tobytes()
    writer.release()
    reader.release()
