"""RingWriter, RingReader and the message encoding over a real shared-memory segment."""

from __future__ import annotations

import os
import queue
import random
import threading
from collections.abc import Iterator
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from syncagg.ring import HEADER_SIZE, RingReader, RingWriter, region_offset
from syncagg.segments import create_segment, new_run_prefix
from syncagg.transport import ResultBatch, decode_message, encode_message

CAPACITY = 1024


def _alive() -> bool:
    return True


@pytest.fixture()
def segment() -> Iterator[shared_memory.SharedMemory]:
    """Two ring regions of CAPACITY bytes in a fresh segment, unlinked afterwards."""
    created = create_segment(f"{new_run_prefix()}ring", 2 * (HEADER_SIZE + CAPACITY))
    yield created
    created.close()
    created.unlink()


def _write(writer: RingWriter, payload: bytes) -> tuple[int, int]:
    start, target = writer.reserve(len(payload), _alive)
    with target:
        target[:] = payload
    end = start + len(payload)
    writer.commit(end)
    return start, end


def _read(reader: RingReader, start: int, end: int) -> bytes:
    with reader.view(start, end) as view:
        data = bytes(view)
    reader.release_to(end)
    return data


def _encode_into(segment: shared_memory.SharedMemory, value: Any) -> int:
    message = encode_message(value)
    try:
        with segment.buf[: message.size] as target:
            message.write_into(target)
    finally:
        message.release()
    return message.size


def _round_trip(value: Any) -> Any:
    """Encode ``value`` into its own segment, decode it, then close and unlink the segment.

    Closing raises ``BufferError`` if the decoded value still refers to the
    segment's memory.
    """
    size = encode_message(value).size
    segment = create_segment(f"{new_run_prefix()}message", size)
    try:
        _encode_into(segment, value)
        with segment.buf[:size] as view:
            decoded = decode_message(view)
    finally:
        segment.close()
        segment.unlink()
    return decoded


def _memory_owner(array: np.ndarray) -> object:
    """Return the object at the end of an array's ``base`` chain."""
    owner: object = array
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    return owner


def _batch(values: list[Any]) -> ResultBatch:
    count = len(values)
    return ResultBatch(
        worker_pid=1234,
        job_ids=list(range(count)),
        values=values,
        starts={0: -0.5},
        finished=[float(i) + 0.5 for i in range(count)],
        errors={},
    )


def test_region_offset_layout() -> None:
    assert region_offset(0, CAPACITY) == 0
    assert region_offset(1, CAPACITY) == HEADER_SIZE + CAPACITY
    assert region_offset(3, 64) == 3 * (HEADER_SIZE + 64)


def test_message_wraps_to_region_start(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    first = bytes(range(256)) * 2 + bytes(88)
    second = bytes(reversed(range(256))) * 2 + bytes(88)

    start, end = _write(writer, first)
    assert (start, end) == (0, 600)
    assert _read(reader, start, end) == first

    # The second message starts on the next 64-byte boundary, 640, and 640 +
    # 600 passes the end of the 1024-byte area, so it starts at the next lap
    # and the 424 skipped bytes are released with it.
    start, end = _write(writer, second)
    assert (start, end) == (1024, 1624)
    assert _read(reader, start, end) == second
    assert reader.head == 1624

    writer.release()
    reader.release()


def test_large_wrap_into_drained_region(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    start, end = _write(writer, b"a" * 300)
    assert _read(reader, start, end) == b"a" * 300

    # 800 bytes fit neither after the aligned tail (704 left) nor in the 320 bytes
    # released before it, but the region is empty. An alive() that returns
    # False turns any wait into ConnectionError instead of a hang.
    start, target = writer.reserve(800, lambda: False)
    with target:
        target[:] = b"b" * 800
    writer.commit(start + 800)

    assert start == 1024
    assert _read(reader, start, start + 800) == b"b" * 800
    writer.release()
    reader.release()


def test_message_fills_region_exactly(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    payload = bytes(i % 251 for i in range(CAPACITY))

    for lap in range(3):
        start, end = _write(writer, payload)
        assert (start, end) == (lap * CAPACITY, (lap + 1) * CAPACITY)
        assert _read(reader, start, end) == payload

    writer.release()
    reader.release()


def test_oversized_message_rejected(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)

    with pytest.raises(ValueError, match="exceeds the ring region of 1024"):
        writer.reserve(CAPACITY + 1, _alive)

    writer.release()


def test_regions_do_not_overlap(segment: shared_memory.SharedMemory) -> None:
    writers = [RingWriter(segment.buf, i, CAPACITY, start=0) for i in range(2)]
    readers = [RingReader(segment.buf, i, CAPACITY) for i in range(2)]
    payloads = [bytes([0xAA]) * CAPACITY, bytes([0x55]) * CAPACITY]
    for index, (writer, payload) in enumerate(zip(writers, payloads, strict=True)):
        writer.set_running(7 + index)
        _write(writer, payload)

    assert _read(readers[0], 0, CAPACITY) == payloads[0]
    assert _read(readers[1], 0, CAPACITY) == payloads[1]
    assert readers[0].head == CAPACITY
    assert readers[1].head == CAPACITY
    assert readers[0].running_job() == 7
    assert readers[1].running_job() == 8

    for writer, reader in zip(writers, readers, strict=True):
        writer.release()
        reader.release()


def test_running_job_published_and_cleared(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 1, CAPACITY, start=0)
    reader = RingReader(segment.buf, 1, CAPACITY)

    assert reader.running_job() is None
    assert reader.started_job() is None
    writer.set_running(0)
    assert reader.running_job() == 0
    assert reader.started_job() == 0
    writer.jobs[0] = 41 + 1  # what the hot loop stores per job while busy
    assert reader.running_job() == 41
    assert reader.started_job() == 41
    # Idle: only the running field is cleared.
    writer.set_running(None)
    assert reader.running_job() is None
    assert reader.started_job() == 41
    writer.set_running(5)
    reader.clear_jobs()
    assert reader.running_job() is None
    assert reader.started_job() is None

    writer.release()
    reader.release()


def test_writer_resumes_after_last_read(segment: shared_memory.SharedMemory) -> None:
    # A replacement worker starts after the last message read, over bytes a dead writer left.
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    start, end = _write(writer, b"a" * 300)
    assert _read(reader, start, end) == b"a" * 300
    _write(writer, b"half written" * 10)
    writer.release()

    replacement = RingWriter(segment.buf, 0, CAPACITY, start=reader.read_end)
    start, end = _write(replacement, b"b" * 500)
    # The parent has freed every message read, so the replacement starts
    # over at the start of the area, past the half-written message.
    assert (start, end) == (CAPACITY, CAPACITY + 500)
    assert _read(reader, start, end) == b"b" * 500

    replacement.release()
    reader.release()


def test_writer_restarts_once_freed(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    start, end = _write(writer, b"a" * 100)
    assert (start, end) == (0, 100)

    # Not freed yet: the next message follows, on a 64-byte boundary.
    start, end = _write(writer, b"b" * 100)
    assert (start, end) == (128, 228)

    assert _read(reader, 0, 100) == b"a" * 100
    assert _read(reader, 128, 228) == b"b" * 100
    # Everything is freed: an array goes to the start of the area, and the
    # message after it fits although 796 skipped bytes lie between.
    reserved = writer.allocate(600, _alive)
    assert reserved is not None
    position, view = reserved
    view.release()
    assert position == CAPACITY
    start, end = _write(writer, b"c" * 300)
    assert (start, end) == (CAPACITY + 640, CAPACITY + 940)
    assert writer.fits(64)

    writer.release()
    reader.release()


def test_writer_blocks_until_release(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    start, end = _write(writer, b"x" * 700)
    polled = threading.Event()
    reserved: queue.SimpleQueue[tuple[int, memoryview]] = queue.SimpleQueue()

    def alive() -> bool:
        polled.set()
        return True

    def reserve() -> None:
        reserved.put(writer.reserve(700, alive))

    thread = threading.Thread(target=reserve, name="test-ring-writer", daemon=True)
    thread.start()

    # alive() is polled only inside the wait loop, so the writer is blocked.
    assert polled.wait(timeout=30)
    assert reserved.empty()

    reader.release_to(end)
    thread.join(timeout=30)
    assert not thread.is_alive()
    position, target = reserved.get_nowait()
    assert position == 1024
    assert len(target) == 700
    assert writer.stall_seconds > 0

    target.release()
    writer.release()
    reader.release()


def test_writer_stops_when_parent_gone(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    _write(writer, b"x" * 900)

    with pytest.raises(ConnectionError, match="parent process is gone"):
        writer.reserve(200, lambda: False)

    writer.release()


def test_random_messages_arrive_intact(segment: shared_memory.SharedMemory) -> None:
    # A writer thread plays the worker and this thread plays the parent.
    # Sizes up to the whole region force wraps and waits.
    rng = random.Random(20240601)
    payloads = [rng.randbytes(rng.randint(1, CAPACITY)) for _ in range(500)]
    writer = RingWriter(segment.buf, 1, CAPACITY, start=0)
    reader = RingReader(segment.buf, 1, CAPACITY)
    descriptors: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()

    def produce() -> None:
        for payload in payloads:
            descriptors.put(_write(writer, payload))

    thread = threading.Thread(target=produce, name="test-ring-producer", daemon=True)
    thread.start()
    received = []
    skips = 0
    previous_end = 0
    for _ in payloads:
        start, end = descriptors.get(timeout=30)
        # Messages start on 64-byte boundaries.
        assert start % 64 == 0
        if start != -(-previous_end // 64) * 64:
            # The writer skipped to the start of the area; nothing else may move a message.
            assert start % CAPACITY == 0
            skips += 1
        previous_end = end
        received.append(_read(reader, start, end))
    thread.join(timeout=30)

    assert not thread.is_alive()
    assert received == payloads
    assert skips > 0
    writer.release()
    reader.release()


def test_encoded_message_wraps_in_ring(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    batch = _batch([np.arange(50, dtype=np.int64), b"tail"])
    message = encode_message(batch)
    assert 500 < message.size <= CAPACITY

    decoded = []
    for _ in range(3):
        start, target = writer.reserve(message.size, _alive)
        with target:
            message.write_into(target)
        end = start + message.size
        writer.commit(end)
        with reader.view(start, end) as view:
            decoded.append(decode_message(view))
        reader.release_to(end)
    message.release()

    assert reader.head == 2 * CAPACITY + message.size
    for result in decoded:
        assert result.job_ids == [0, 1]
        assert result.values[1] == b"tail"
        np.testing.assert_array_equal(result.values[0], np.arange(50, dtype=np.int64))
    writer.release()
    reader.release()


NUMPY_VALUES = {
    "float64": np.linspace(-1.0, 1.0, 1001),
    "float32": np.arange(257, dtype=np.float32) / 3,
    "int8": np.arange(-128, 128, dtype=np.int8),
    "uint64": np.array([0, 1, 2**64 - 1], dtype=np.uint64),
    "big_endian_int32": np.arange(10, dtype=">i4"),
    "complex128": np.array([1 + 2j, -3.5j, 0]),
    "bool": np.array([True, False, True]),
    "datetime64": np.array(["2024-01-01", "2024-02-29"], dtype="datetime64[ns]"),
    "unicode": np.array(["a", "bcd", ""]),
    "structured": np.array([(1, 2.5), (3, -1.0)], dtype=[("id", "<i4"), ("score", "<f8")]),
    "zero_dimensional": np.array(3.25),
    "empty": np.array([], dtype=np.float64),
    "empty_2d": np.zeros((0, 3), dtype=np.int16),
    "two_dimensional": np.arange(24, dtype=np.int32).reshape(4, 6),
    "fortran_order": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "strided": np.arange(100, dtype=np.int64)[::3],
    "strided_2d": np.arange(60.0).reshape(6, 10)[1:5:2, ::4],
    "negative_stride": np.arange(10, dtype=np.uint16)[::-1],
    "read_only": np.frombuffer(b"\x01\x02\x03\x04", dtype=np.uint8),
    "scalar": np.float32(1.5),
}


@pytest.mark.parametrize("name", list(NUMPY_VALUES))
def test_numpy_array_round_trip(name: str) -> None:
    original = NUMPY_VALUES[name]

    decoded = _round_trip(_batch([original])).values[0]

    assert type(decoded) is type(original)
    assert decoded.dtype == original.dtype
    assert decoded.shape == original.shape
    np.testing.assert_array_equal(decoded, original)


def test_decoded_arrays_own_no_shared_memory() -> None:
    arrays = [np.full(100_000, i, dtype=np.float64) for i in range(4)]
    size = encode_message(_batch(arrays)).size
    segment = create_segment(f"{new_run_prefix()}message", size)
    try:
        _encode_into(segment, _batch(arrays))
        with segment.buf[:size] as view:
            decoded = decode_message(view)
        # Overwrite the message; arrays that still pointed at it would change.
        segment.buf[:size] = bytes(size)
    finally:
        # Raises BufferError if a decoded array still exports the mapping.
        segment.close()
        segment.unlink()

    for i, array in enumerate(decoded.values):
        assert isinstance(_memory_owner(array), bytearray)
        assert array.flags.writeable
        np.testing.assert_array_equal(array, arrays[i])


def test_bytes_values_round_trip() -> None:
    values = [
        b"",
        b"\x00\xff" * 50_000,
        bytearray(b"mutable" * 1000),
        memoryview(b"read-only view"),
        memoryview(bytearray(b"writable view")),
    ]

    decoded = _round_trip(_batch(values)).values

    assert decoded[0] == b""
    assert type(decoded[1]) is bytes
    assert decoded[1] == values[1]
    assert type(decoded[2]) is bytearray
    assert decoded[2] == values[2]
    assert type(decoded[3]) is memoryview
    assert decoded[3] == values[3]
    assert decoded[3].readonly
    assert type(decoded[4]) is memoryview
    assert decoded[4] == values[4]
    assert not decoded[4].readonly


def test_memoryview_keeps_format_and_shape() -> None:
    matrix = memoryview(np.arange(12.0).reshape(3, 4))
    strided = memoryview(np.arange(20, dtype=np.int64))[::4]
    scalar = memoryview(np.array(7, dtype=np.int32))

    decoded = _round_trip(_batch([matrix, strided, scalar])).values

    assert (decoded[0].format, decoded[0].shape) == ("d", (3, 4))
    assert decoded[0] == matrix
    assert (decoded[1].format, decoded[1].shape) == (strided.format, (5,))
    assert decoded[1] == strided
    assert (decoded[2].format, decoded[2].shape) == ("i", ())
    assert decoded[2] == scalar


def test_memoryview_of_unsupported_format_rejected() -> None:
    view = memoryview(np.zeros(2, dtype=">i4"))

    with pytest.raises(TypeError, match="cannot pickle a memoryview of format '>i'"):
        encode_message(_batch([view]))


def test_arrow_buffers_round_trip() -> None:
    buffer = pa.py_buffer(bytes(range(256)) * 100)
    array = pa.array([1.5, None, -2.0])

    decoded = _round_trip(_batch([buffer, array])).values

    assert isinstance(decoded[0], pa.Buffer)
    assert decoded[0].to_pybytes() == buffer.to_pybytes()
    assert isinstance(decoded[1], pa.Array)
    assert decoded[1].to_pylist() == [1.5, None, -2.0]


def test_nested_values_round_trip() -> None:
    nested = {
        "name": "run",
        "counts": {"ok": 3, "failed": 0},
        "arrays": {"a": np.arange(5), "b": [np.ones((2, 2), dtype=np.float32), b"raw"]},
        "items": [1, 2.5, None, True, ("tuple", 3)],
        "empty": {},
    }

    decoded = _round_trip(_batch([nested])).values[0]

    assert decoded.keys() == nested.keys()
    assert decoded["name"] == "run"
    assert decoded["counts"] == {"ok": 3, "failed": 0}
    np.testing.assert_array_equal(decoded["arrays"]["a"], np.arange(5))
    np.testing.assert_array_equal(decoded["arrays"]["b"][0], np.ones((2, 2), dtype=np.float32))
    assert decoded["arrays"]["b"][1] == b"raw"
    assert decoded["items"] == [1, 2.5, None, True, ("tuple", 3)]
    assert decoded["empty"] == {}


def test_batch_columns_round_trip() -> None:
    batch = ResultBatch(
        worker_pid=4321,
        job_ids=[10, 11, 12],
        values=[{"x": 10}, None, np.arange(3)],
        starts={0: 1.0, 2: 3.0},
        finished=[1.5, 2.5, 3.5],
        errors={1: ("ValueError", "bad input", "Traceback ...")},
    )

    decoded = _round_trip(batch)

    assert isinstance(decoded, ResultBatch)
    assert decoded.worker_pid == 4321
    assert decoded.job_ids == [10, 11, 12]
    assert decoded.values[0] == {"x": 10}
    assert decoded.values[1] is None
    np.testing.assert_array_equal(decoded.values[2], np.arange(3))
    assert [decoded.started_at(i) for i in range(3)] == [1.0, 1.5, 3.0]
    assert decoded.finished == [1.5, 2.5, 3.5]
    assert decoded.errors == {1: ("ValueError", "bad input", "Traceback ...")}


def _lend_message(reader: RingReader, start: int, end: int) -> tuple[Any, Any]:
    """Lend a message's bytes as one buffer; return the loan and the buffer."""
    loan = reader.lend(end)
    buffer = loan.lend(reader.view(start, end))
    loan.close()
    return loan, buffer


def test_lent_bytes_are_freed_in_order(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    first = _write(writer, b"1" * 200)
    second = _write(writer, b"2" * 300)
    third = _write(writer, b"3" * 100)

    _, first_buffer = _lend_message(reader, *first)
    _, second_buffer = _lend_message(reader, *second)
    # Copied, not lent: freed as soon as the messages before it are.
    reader.release_to(third[1])
    assert reader.head == 0
    assert reader.read_end == 676
    assert bytes(np.frombuffer(second_buffer, np.uint8)[:3]) == b"222"

    del second_buffer
    assert reader.head == 0
    del first_buffer
    assert reader.head == 676
    assert not reader.lent

    writer.release()
    reader.release()


def test_lent_bytes_kept_by_last_view(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    start, end = _write(writer, np.arange(50, dtype=np.float64).tobytes())

    _, buffer = _lend_message(reader, start, end)
    array = np.frombuffer(buffer, np.float64)
    del buffer
    tail = array[40:]
    del array
    assert reader.head == 0
    assert float(tail[0]) == 40.0

    del tail
    assert reader.head == end

    writer.release()
    reader.release()


def test_view_dropped_in_another_thread_frees_bytes(segment: shared_memory.SharedMemory) -> None:
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    start, end = _write(writer, b"t" * 400)
    _, buffer = _lend_message(reader, start, end)
    holder = [buffer]
    del buffer

    thread = threading.Thread(target=holder.clear)
    thread.start()
    thread.join()

    assert reader.head == end
    writer.release()
    reader.release()


def test_full_region_kept_by_a_view_is_refused(segment: shared_memory.SharedMemory) -> None:
    # Once the parent reports that a lent view outlived its batch, a writer
    # that finds the region full gets None instead of waiting.
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    start, end = _write(writer, b"k" * 700)
    _, buffer = _lend_message(reader, start, end)

    reader.hold()
    assert writer.reserve(200, _alive) is not None
    writer.commit(end + 200)
    assert writer.reserve(500, _alive) is None
    assert writer.allocate(500, _alive) is None

    del buffer
    assert reader.head == end
    reserved = writer.reserve(500, _alive)
    assert reserved is not None
    assert reserved[0] == CAPACITY
    reserved[1].release()

    writer.release()
    reader.release()


def test_head_never_moves_back(segment: shared_memory.SharedMemory) -> None:
    reader = RingReader(segment.buf, 0, CAPACITY)

    reader.release_to(512)
    reader.release_to(256)

    assert reader.head == 512
    reader.release()


def test_forked_copy_leaves_the_header_alone(segment: shared_memory.SharedMemory) -> None:
    # A forked worker inherits the parent's lent buffers. Freeing its copies
    # must not free the parent's bytes through the shared header.
    writer = RingWriter(segment.buf, 0, CAPACITY, start=0)
    reader = RingReader(segment.buf, 0, CAPACITY)
    start, end = _write(writer, b"f" * 400)
    _, buffer = _lend_message(reader, start, end)

    child = os.fork()
    if child == 0:
        del buffer
        os._exit(0 if reader.head == 0 else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert reader.head == 0
    del buffer
    assert reader.head == end
    writer.release()
    reader.release()
