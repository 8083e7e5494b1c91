"""An async iterator over ``Aggregator.stream``, for code that runs in an event loop.

This is the only module of syncagg that imports asyncio. Each step of the
blocking iteration runs in the event loop's default thread pool through
``asyncio.to_thread``, so the loop stays free while the run goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from syncagg.aggregator import Aggregator
from syncagg.records import JobResult
from syncagg.streaming import ResultStream

__all__ = ["aiter_results"]


async def aiter_results(
    aggregator: Aggregator,
    fn: Callable[[Any], Any],
    inputs: Iterable[Any],
    buffer_size: int = 1000,
    buffer_bytes: int = 64 * 1024 * 1024,
) -> AsyncIterator[JobResult]:
    """Yield the ``JobResult`` objects of ``aggregator.stream(fn, inputs)`` as they arrive.

    Leaving the ``async for`` early stops the run once the generator is
    closed: at once with ``contextlib.aclosing``, else when the event loop
    finalizes it (``asyncio.run`` does so before it returns). Errors are
    raised as from ``stream``.

    Examples
    --------
    >>> import asyncio, syncagg
    >>> async def main():
    ...     aggregator = syncagg.Aggregator(workers=syncagg.Threads(2), progress=False)
    ...     return sorted([r.value async for r in aiter_results(aggregator, abs, [-2, 1])])
    >>> asyncio.run(main())
    [1, 2]
    """
    stream = await asyncio.to_thread(aggregator.stream, fn, inputs, buffer_size, buffer_bytes)
    try:
        while True:
            result = await asyncio.to_thread(_next_or_none, stream)
            if result is None:
                return
            yield result
    finally:
        # Closing waits for the run's processes, so it too leaves the loop free.
        await asyncio.to_thread(stream.close)


def _next_or_none(stream: ResultStream) -> JobResult | None:
    # StopIteration cannot cross a thread into a coroutine, so the end is None.
    return next(stream, None)
