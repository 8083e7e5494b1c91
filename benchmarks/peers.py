"""The libraries syncagg is compared with, each driven the way its docs show.

Each peer function starts a pool of ``WORKERS`` processes, yields the
results of ``fn`` over ``inputs`` as the library delivers them, and shuts
the pool down. Parent-side work (folding, writing files) happens in the
loop that consumes the iterator, as in a user's script.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any

# One worker per core the process may use: 2 on the machine the figures in
# docs/benchmarks.md come from. syncagg gets the same number.
WORKERS = len(os.sched_getaffinity(0))

Job = Callable[[Any], Any]
Peer = Callable[[Job, range, int], Iterator[Any]]


def pool_imap_unordered(fn: Job, inputs: range, chunksize: int) -> Iterator[Any]:
    """Yield results from ``multiprocessing.Pool.imap_unordered``."""
    with multiprocessing.Pool(WORKERS) as pool:
        yield from pool.imap_unordered(fn, inputs, chunksize)


def pool_imap_unordered_list(fn: Job, inputs: range, chunksize: int) -> Iterator[Any]:
    """Collect ``Pool.imap_unordered`` into a list first, then yield from the list."""
    with multiprocessing.Pool(WORKERS) as pool:
        results = list(pool.imap_unordered(fn, inputs, chunksize))
    yield from results


def executor_map_list(fn: Job, inputs: range, chunksize: int) -> Iterator[Any]:
    """Collect ``ProcessPoolExecutor.map`` into a list first, then yield from the list.

    ``map`` submits every chunk at once before Python 3.14, so its futures
    grow with the inputs whether or not the results are kept.
    """
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as executor:
        results = list(executor.map(fn, inputs, chunksize=chunksize))
    yield from results


def executor_map(fn: Job, inputs: range, chunksize: int) -> Iterator[Any]:
    """Yield results from ``ProcessPoolExecutor.map`` as they come, in input order."""
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as executor:
        yield from executor.map(fn, inputs, chunksize=chunksize)


def mpire_imap_unordered(fn: Job, inputs: range, chunksize: int) -> Iterator[Any]:
    """Yield results from ``mpire.WorkerPool.imap_unordered``."""
    from mpire.pool import WorkerPool

    with WorkerPool(n_jobs=WORKERS) as pool:
        yield from pool.imap_unordered(fn, inputs, chunk_size=chunksize)


def joblib_unordered(fn: Job, inputs: range, chunksize: int) -> Iterator[Any]:
    """Yield results from joblib with ``return_as="generator_unordered"``.

    ``batch_size`` stays at joblib's default ``"auto"``, which tunes the
    batch to the task duration; ``chunksize`` is not used.
    """
    import joblib  # type: ignore[import-untyped]

    parallel = joblib.Parallel(n_jobs=WORKERS, return_as="generator_unordered")
    yield from parallel(joblib.delayed(fn)(i) for i in inputs)


# The module each peer needs beyond the standard library.
REQUIRES: dict[Peer, str | None] = {
    pool_imap_unordered: None,
    pool_imap_unordered_list: None,
    executor_map_list: None,
    executor_map: None,
    mpire_imap_unordered: "mpire",
    joblib_unordered: "joblib",
}


def installed(module: str | None) -> bool:
    """Return whether ``module`` can be imported; ``None`` means the standard library."""
    return module is None or importlib.util.find_spec(module) is not None
