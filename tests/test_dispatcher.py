"""The dispatcher's reading of inputs into chunks, in this process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import syncagg.dispatcher as dispatcher_module
from syncagg.dispatcher import PAUSE, Dispatcher
from syncagg.jobranges import JobRanges


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
