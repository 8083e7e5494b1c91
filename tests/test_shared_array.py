"""syncagg.shared_array: results written straight into the worker's ring region."""

from __future__ import annotations

import os
from collections.abc import Iterator
from multiprocessing import shared_memory

import numpy as np
import pytest

import syncagg as sa
from syncagg.ring import HEADER_SIZE, RingReader, RingWriter
from syncagg.segments import SHM_DIR, create_segment, new_run_prefix
from syncagg.transport import ResultBatch, decode_message, encode_message
from tests import transport_jobs

_MiB = 1024 * 1024
CAPACITY = 64 * 1024


def _alive() -> bool:
    return True


def _own_segments() -> list[str]:
    prefix = f"syncagg-{os.getpid()}-"
    return sorted(name for name in os.listdir(SHM_DIR) if name.startswith(prefix))


@pytest.fixture()
def segment() -> Iterator[shared_memory.SharedMemory]:
    """One ring region of CAPACITY bytes in a fresh segment, unlinked afterwards."""
    created = create_segment(f"{new_run_prefix()}ring", HEADER_SIZE + CAPACITY)
    yield created
    created.close()
    created.unlink()


def test_outside_worker_returns_plain_array() -> None:
    array = sa.shared_array((2, 3), "int32")

    assert type(array) is np.ndarray
    assert array.shape == (2, 3)
    assert array.dtype == np.int32
    assert array.flags.c_contiguous
    assert array.flags.writeable
    assert array.base is None


def test_message_refers_to_allocated_array(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=10)
    reader = RingReader(segment.buf, 0, CAPACITY)
    reserved = writer.allocate(8000, _alive)
    assert reserved is not None
    position, view = reserved
    array = np.frombuffer(view, dtype=np.float64)
    array[:] = np.arange(1000.0)
    address = writer.address + position % CAPACITY

    def locate(buffer: memoryview) -> int | None:
        return position if np.frombuffer(buffer, np.uint8).ctypes.data == address else None

    batch = ResultBatch(1, [0], [array], {0: 0.0}, [1.0])
    message = encode_message(batch, locate)
    start, target = writer.reserve(message.size, _alive)
    with target:
        message.write_into(target)
    message.release()
    del array
    view.release()
    with reader.view(start, start + message.size) as source:
        decoded = decode_message(source, reader.view)
    reader.release_to(start + message.size)

    # Aligned up from 10, and the message holds no copy of the 8000 bytes.
    assert position == 64
    assert start == 64 + 8000
    assert message.size < 1000
    assert decoded.values[0].dtype == np.float64
    np.testing.assert_array_equal(decoded.values[0], np.arange(1000.0))
    writer.release()
    reader.release()


def test_allocation_rejected_beside_unsent_arrays(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)

    first = writer.allocate(CAPACITY // 2, _alive)
    second = writer.allocate(CAPACITY // 2 + 64, _alive)

    assert first is not None
    assert first[0] == 0
    # The unsent first array leaves too little room, and waiting would never end.
    assert second is None
    assert not writer.fits(CAPACITY // 2 + 64)
    assert writer.fits(CAPACITY // 2)
    first[1].release()
    writer.release()


def test_shared_arrays_arrive_exact() -> None:
    aggregator = sa.Aggregator(strategy=sa.Collect(ordered=True), workers=2, progress=False)

    summary = aggregator.run(transport_jobs.ramp, range(40))

    assert summary.counts["ok"] == 40
    assert len(summary.value) == 40
    for x, array in enumerate(summary.value):
        assert array.dtype == np.float64
        assert array.shape == (1000 + x,)
        np.testing.assert_array_equal(array, transport_jobs.ramp_expected(x))
    assert _own_segments() == []


def test_shared_arrays_inside_dicts() -> None:
    aggregator = sa.Aggregator(strategy=sa.Collect(ordered=True), workers=2, progress=False)

    summary = aggregator.run(transport_jobs.matrix_row, range(30))

    for x, row in enumerate(summary.value):
        assert row["x"] == x
        assert row["grid"].dtype == np.int32
        assert row["grid"].shape == (3, 4)
        np.testing.assert_array_equal(row["grid"], np.arange(12, dtype=np.int32).reshape(3, 4) * x)
        assert row["empty"].shape == (0,)
        assert row["empty"].dtype == np.uint8


def test_shared_array_larger_than_region() -> None:
    # 1 MiB regions: these arrays are plain numpy arrays in segments of their own.
    sizes = [1_500_000 + i for i in range(4)] + [1000, 0]
    aggregator = sa.Aggregator(
        strategy=sa.Collect(ordered=True), workers=2, progress=False, ring_size=2 * _MiB
    )

    summary = aggregator.run(transport_jobs.big_shared, sizes)

    assert summary.counts["ok"] == 6
    for size, array in zip(sizes, summary.value, strict=True):
        assert array.shape == (size,)
        assert array.dtype == np.uint8
        np.testing.assert_array_equal(array, np.full(size, size % 251, dtype=np.uint8))
    assert _own_segments() == []


def test_shared_arrays_after_worker_replacement() -> None:
    aggregator = sa.Aggregator(strategy=sa.Collect(ordered=True), workers=2, progress=False)

    summary = aggregator.run(transport_jobs.ramp_kill_on_5, range(20))

    assert summary.counts["ok"] == 19
    assert summary.counts["failed"] == 1
    assert summary.failures[0].job_id == 5
    assert summary.failures[0].error is not None
    assert summary.failures[0].error.type == "syncagg.WorkerDied"
    expected_ids = [x for x in range(20) if x != 5]
    assert len(summary.value) == 19
    for x, array in zip(expected_ids, summary.value, strict=True):
        np.testing.assert_array_equal(array, transport_jobs.ramp_expected(x))
    assert _own_segments() == []
