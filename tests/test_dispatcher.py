"""The dispatcher's reading of inputs into chunks, in this process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import syncagg.dispatcher as dispatcher_module
from syncagg.dispatcher import PAUSE, Dispatcher
from syncagg.jobranges import JobRanges
from syncagg.transport import ResultBatch


class Trickle:
    """Inputs that pause between groups, as quiet standard input does."""

    may_pause = True

    def __init__(self, groups: list[list[int]]) -> None:
        self.groups = groups

    def __iter__(self) -> Iterator[Any]:
        for group in self.groups:
            yield from group
            yield PAUSE


def test_pause_ends_chunk_without_ending_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatcher_module, "_PAUSE_SECONDS", 0.0)
    dispatcher = Dispatcher(Trickle([[0, 1], [], [2, 3, 4]]), workers=1, done=JobRanges(), chunksize=10)

    first = dispatcher.next_chunk(0)
    assert first is not None
    assert list(first.items) == [0, 1]
    assert not dispatcher.exhausted

    # The empty group is a pause with nothing read: no chunk, inputs go on.
    assert dispatcher.next_chunk(0) is None
    assert not dispatcher.exhausted

    second = dispatcher.next_chunk(0)
    assert second is not None
    assert list(second.items) == [2, 3, 4]
    assert list(second.job_ids) == [2, 3, 4]


def test_pause_ignored_without_may_pause() -> None:
    # An iterable that does not declare pauses passes PAUSE through as an input.
    dispatcher = Dispatcher(iter([0, PAUSE, 1]), workers=1, done=JobRanges(), chunksize=10)

    chunk = dispatcher.next_chunk(0)

    assert chunk is not None
    assert list(chunk.items) == [0, PAUSE, 1]
    assert dispatcher.exhausted


def test_reading_waits_after_pause() -> None:
    # Right after a pause no slot reads, so quiet inputs hold up one read,
    # not one per slot. Once the wait is over, the next read goes on.
    read = []

    class Counting(Trickle):
        def __iter__(self) -> Iterator[Any]:
            for item in super().__iter__():
                read.append(item)
                yield item

    dispatcher = Dispatcher(Counting([[0], [1]]), workers=2, done=JobRanges(), chunksize=10)
    assert dispatcher.next_chunk(0) is not None
    assert dispatcher.next_chunk(1) is None
    assert read == [0, PAUSE]

    time.sleep(0.15)
    chunk = dispatcher.next_chunk(1)
    assert chunk is not None
    assert list(chunk.items) == [1]


def test_range_inputs_go_out_as_ranges() -> None:
    done = JobRanges()
    done.add_range(3, 5)
    dispatcher = Dispatcher(range(100, 110), workers=1, done=done, chunksize=4)
    chunks = []
    while (chunk := dispatcher.next_chunk(0)) is not None:
        chunks.append((chunk.job_ids, chunk.items))

    # Jobs 3 and 4 finished in an earlier run: the reads that held them
    # go out as lists without them, and the reads after them as ranges.
    assert chunks == [
        ([0, 1, 2], [100, 101, 102]),
        ([5, 6, 7], [105, 106, 107]),
        (range(8, 10), range(108, 110)),
    ]
    assert dispatcher.exhausted


def test_worker_gets_whole_chunks_only() -> None:
    dispatcher = Dispatcher(range(1000), workers=1, done=JobRanges(), chunksize=10)
    sent = []
    while (chunk := dispatcher.next_chunk(0)) is not None:
        dispatcher.register(0, chunk)
        sent.append(len(chunk.items))
    assert sent == [10] * dispatcher_module._CHUNKS_PER_WORKER

    # Results of 9 jobs leave room for less than a chunk: nothing goes out.
    dispatcher.complete(0, list(range(9)))
    assert dispatcher.next_chunk(0) is None

    dispatcher.complete(0, [9])
    chunk = dispatcher.next_chunk(0)
    assert chunk is not None
    assert chunk.job_ids == range(40, 50)
    assert chunk.attempts == [0] * 10
    dispatcher.register(0, chunk)
    assert chunk.attempts == [1] * 10


def _batch(count: int, seconds_per_job: float) -> ResultBatch:
    # Powers of two keep the times exact.
    finished = [seconds_per_job * (i + 1) for i in range(count)]
    return ResultBatch(1, range(count), [None] * count, {0: 0.0}, finished)


def test_chunk_size_halves_at_most() -> None:
    dispatcher = Dispatcher(range(10**9), workers=2, done=JobRanges())
    assert dispatcher.chunksize == 1

    # 50 ms of work a chunk: jobs of 2**-8 s (3.9 ms) make chunks of 12.
    dispatcher.observe(_batch(20, 2**-8))
    assert dispatcher.chunksize == 12

    # Jobs of 2**-16 s (15 us) make chunks of 3276.
    dispatcher.observe(_batch(20, 2**-16))
    assert dispatcher.chunksize == 3276

    # A batch that looks 64 times slower halves the size, no more.
    dispatcher.observe(_batch(20, 2**-10))
    assert dispatcher.chunksize == 1638
    dispatcher.observe(_batch(20, 2**-10))
    assert dispatcher.chunksize == 819


def test_chunk_size_capped_by_pickled_bytes() -> None:
    dispatcher = Dispatcher(range(10**9), workers=2, done=JobRanges())
    dispatcher.observe(_batch(20, 2**-16))
    assert dispatcher.chunksize == 3276

    # 3276 inputs pickled to 32 MiB: 10 kB each, so 102 fill the 1 MiB a chunk may hold.
    dispatcher.measure_payload(3276 * 10_240, 3276)
    assert dispatcher.chunksize == 102
    # Faster jobs do not raise the size past that.
    dispatcher.observe(_batch(20, 2**-20))
    assert dispatcher.chunksize == 102
