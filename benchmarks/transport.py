"""Measure how fast results travel from worker processes to the parent.

    python -m benchmarks.transport [--quick] [--runs N]

Two workloads run on ``WORKERS`` worker processes, each on syncagg and on
the peers, with the same job function and the same consumer:

- ``small``: each job returns a dict of six numbers and the consumer sums
  one field. Reported: results per second and the parent's CPU time per
  result (``time.process_time`` of the parent, every thread included).
- ``large``: each job returns a float64 array of 1 MiB or 16 MiB and the
  consumer reads one element. Reported: GB/s of array data, and next to it
  the single-thread copy bandwidth into reused memory (``numpy.copyto`` of
  consecutive pieces of a source larger than the caches into one
  preallocated array), measured in the same run.

Every run includes starting and stopping the library's processes. Each
figure is the median of ``--runs`` runs, and each round runs every library
once, in an order that rotates from round to round, so that the noise of a
shared machine falls on all of them alike. Ratios compare syncagg with each
peer in the same run.

``small_results``, ``large_results`` and ``rows`` return the figures for
other scripts; ``main`` prints them as tables.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import importlib.util
import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext
from typing import Any

import numpy as np

import syncagg as sa

WORKERS = 2
SMALL_COUNT = 2_000_000
SMALL_COUNT_QUICK = 300_000
# Results per message for the peers that take a chunk size or are batched by hand.
SMALL_BATCH = 1000
# Array length in float64 elements -> number of arrays per run (full, quick).
ARRAY_COUNTS = {131_072: (4000, 1500), 2_097_152: (250, 100)}
RUNS = 5
RUNS_QUICK = 3
_GB = 1e9

# (wall seconds, parent CPU seconds, consumer's total)
Measurement = tuple[float, float, float]
Runner = Callable[[int], float]


# ---------------------------------------------------------------- job functions


def small_row(i: int) -> dict[str, Any]:
    """Return a six-field row of numbers for input ``i``."""
    return {"id": i, "group": i % 64, "x": i * 0.5, "y": i % 7, "ok": i % 3 != 0, "size": 3 * i}


def small_expected(count: int) -> float:
    """Return the sum of the ``size`` field over ``count`` rows."""
    return 3.0 * count * (count - 1) / 2


def array_result(length: int, i: int) -> np.ndarray:
    """Return ``length`` float64 elements that all equal ``i % 7``."""
    return np.full(length, float(i % 7))


def shared_array_result(length: int, i: int) -> np.ndarray:
    """Return what ``array_result`` returns, written straight into the worker's ring region."""
    out = sa.shared_array((length,), np.float64)
    out.fill(float(i % 7))
    return out


def array_expected(count: int) -> float:
    """Return the sum of the first elements of ``count`` arrays."""
    return float(sum(i % 7 for i in range(count)))


def _add_first(total: float, array: np.ndarray) -> float:
    return total + float(array[0])


# ---------------------------------------------------------------- syncagg


class SumSize(sa.Strategy):
    """Sum the ``size`` field in one loop per batch, as the peers' consumers do."""

    def __init__(self) -> None:
        self.total = 0.0

    def add_values(self, values: list[Any]) -> None:
        total = self.total
        for row in values:
            total += row["size"]
        self.total = total

    def value(self) -> float:
        return self.total

    def reset(self) -> None:
        self.total = 0.0

    def state(self) -> float:
        return self.total

    def restore(self, state: Any) -> None:
        self.total = state


def run_syncagg_small(count: int) -> float:
    """Sum ``size`` over ``count`` small rows with syncagg's default settings."""
    summary = sa.Aggregator(strategy=SumSize(), workers=WORKERS, progress=False).run(small_row, range(count))
    total: float = summary.value
    return total


def run_syncagg(fn: Callable[[int], Any], fold: Callable[[float, Any], float], count: int) -> float:
    """Run ``fn`` over ``count`` inputs with default settings; return the fold's total."""
    aggregator = sa.Aggregator(strategy=sa.Reduce(fold, 0.0), workers=WORKERS, progress=False)
    summary = aggregator.run(fn, range(count))
    total: float = summary.value
    return total


# ---------------------------------------------------------------- peers


def _context() -> BaseContext:
    return multiprocessing.get_context("fork")


def _split(count: int) -> list[range]:
    """Split ``range(count)`` into one contiguous part per worker."""
    bounds = [count * k // WORKERS for k in range(WORKERS + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(WORKERS)]


def _put_batches(queue: Any, fn: Callable[[int], Any], inputs: range, batch: int) -> None:
    for start in range(0, len(inputs), batch):
        queue.put([fn(i) for i in inputs[start : start + batch]])


def _put_each(queue: Any, fn: Callable[[int], Any], inputs: range) -> None:
    for i in inputs:
        queue.put(fn(i))


def _start_producers(target: Callable[..., None], queue: Any, *args: Any, count: int) -> list[Any]:
    processes = [
        _context().Process(target=target, args=(queue, *args[:1], part, *args[1:]), daemon=True)
        for part in _split(count)
    ]
    for process in processes:
        process.start()
    return processes


def _join(processes: Sequence[Any]) -> None:
    for process in processes:
        process.join()


def run_mp_queue_batched(count: int) -> float:
    """Sum ``size`` over rows that two processes put on a ``multiprocessing.Queue`` in lists of 1000."""
    queue = _context().Queue()
    processes = _start_producers(_put_batches, queue, small_row, SMALL_BATCH, count=count)
    total = 0.0
    received = 0
    while received < count:
        rows = queue.get()
        received += len(rows)
        for row in rows:
            total += row["size"]
    _join(processes)
    return total


def run_faster_fifo(count: int) -> float:
    """Sum ``size`` over lists of 1000 rows put on a faster-fifo queue and read with ``get_many``."""
    import faster_fifo

    queue = faster_fifo.Queue(max_size_bytes=64 * 1024 * 1024)
    processes = _start_producers(_put_batches, queue, small_row, SMALL_BATCH, count=count)
    total = 0.0
    received = 0
    while received < count:
        for rows in queue.get_many(timeout=60):
            received += len(rows)
            for row in rows:
                total += row["size"]
    _join(processes)
    return total


def run_pool(count: int) -> float:
    """Sum ``size`` over ``Pool.imap_unordered(chunksize=1000)``."""
    total = 0.0
    with _context().Pool(WORKERS) as pool:
        for row in pool.imap_unordered(small_row, range(count), chunksize=SMALL_BATCH):
            total += row["size"]
    return total


def run_executor(count: int) -> float:
    """Sum ``size`` over ``ProcessPoolExecutor.map(chunksize=1000)``."""
    total = 0.0
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=_context()) as executor:
        for row in executor.map(small_row, range(count), chunksize=SMALL_BATCH):
            total += row["size"]
    return total


def run_mpire(count: int) -> float:
    """Sum ``size`` over ``mpire.WorkerPool.imap_unordered(chunk_size=1000)``."""
    import mpire

    total = 0.0
    with mpire.WorkerPool(n_jobs=WORKERS, start_method="fork") as pool:
        for row in pool.imap_unordered(small_row, range(count), chunk_size=SMALL_BATCH):
            total += row["size"]
    return total


def run_joblib(count: int) -> float:
    """Sum ``size`` over joblib's ``return_as="generator_unordered"`` with automatic batching."""
    import joblib

    total = 0.0
    parallel = joblib.Parallel(n_jobs=WORKERS, return_as="generator_unordered")
    for row in parallel(joblib.delayed(small_row)(i) for i in range(count)):
        total += row["size"]
    return total


def run_mp_queue_arrays(length: int, count: int) -> float:
    """Read the first element of each array that two processes put on a ``multiprocessing.Queue``."""
    queue = _context().Queue()
    fn = functools.partial(array_result, length)
    processes = _start_producers(_put_each, queue, fn, count=count)
    total = 0.0
    for _ in range(count):
        total += float(queue.get()[0])
    _join(processes)
    return total


def run_faster_fifo_arrays(length: int, count: int) -> float:
    """Read the first element of each array put on a faster-fifo queue, with ``get_many``."""
    import faster_fifo

    # Room for four messages, so producers rarely wait on the consumer.
    queue = faster_fifo.Queue(max_size_bytes=4 * (8 * length + 4096))
    fn = functools.partial(array_result, length)
    processes = _start_producers(_put_each, queue, fn, count=count)
    total = 0.0
    received = 0
    while received < count:
        for array in queue.get_many(timeout=60):
            received += 1
            total += float(array[0])
    _join(processes)
    return total


# ---------------------------------------------------------------- measuring


def _measure(run: Runner, count: int, expected: float) -> tuple[float, float]:
    """Return the wall and parent CPU seconds of one run, after checking its total."""
    cpu = time.process_time()
    began = time.perf_counter()
    total = run(count)
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu
    if total != expected:
        raise RuntimeError(f"{run} returned {total}, expected {expected}")
    return wall, cpu


def _rounds(runners: dict[str, Runner], count: int, expected: float, runs: int) -> dict[str, list[tuple[float, float]]]:
    """Run every runner ``runs`` times, rotating the order each round, after one short warm-up run."""
    names = list(runners)
    warm_up = max(2, count // 20)
    for name in names:
        # Imports and first-time costs stay out of the measured runs.
        runners[name](warm_up)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_index in range(runs):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_measure(runners[name], count, expected))
    return times


# Peers that only the bench extra installs: (module, name in the tables).
_OPTIONAL_PEERS = [("faster_fifo", "faster-fifo"), ("mpire", "mpire"), ("joblib", "joblib")]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# Larger than the last-level cache of the machines this runs on, so that
# the copy reads memory, as the parent does with arrays a worker wrote.
_MEMCPY_SOURCE_BYTES = 256 * 1024 * 1024


def memcpy_bandwidth(length: int, repeat: int = 5) -> float:
    """Return the median GB/s of ``numpy.copyto`` of ``length`` float64 into a reused array.

    The arrays copied are consecutive pieces of a source larger than the
    caches, so the figure is the bandwidth of memory, not of a cache that
    contains one array copied again and again.
    """
    pieces = max(1, _MEMCPY_SOURCE_BYTES // (length * 8))
    source = np.arange(pieces * length, dtype=np.float64).reshape(pieces, length)
    target = np.empty(length)
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        for piece in source:
            np.copyto(target, piece)
        samples.append(source.nbytes / (time.perf_counter() - began) / _GB)
    return statistics.median(samples)


def small_results(quick: bool = False, runs: int | None = None) -> dict[str, Any]:
    """Measure small dict results on every library; return the medians and the ratios.

    Returns ``{"count", "runs", "libraries": {name: {"results_per_s",
    "cpu_us_per_result", "wall_s"}}, "ratios": {peer: syncagg / peer}}``.
    """
    count = SMALL_COUNT_QUICK if quick else SMALL_COUNT
    runs = runs or (RUNS_QUICK if quick else RUNS)
    runners: dict[str, Runner] = {
        "syncagg": run_syncagg_small,
        "multiprocessing.Queue, lists of 1000": run_mp_queue_batched,
        "Pool.imap_unordered(chunksize=1000)": run_pool,
        "ProcessPoolExecutor.map(chunksize=1000)": run_executor,
    }
    if _installed("faster_fifo"):
        runners["faster-fifo get_many, lists of 1000"] = run_faster_fifo
    if _installed("mpire"):
        runners["mpire imap_unordered(chunk_size=1000)"] = run_mpire
    if _installed("joblib"):
        runners["joblib generator_unordered"] = run_joblib

    times = _rounds(runners, count, small_expected(count), runs)
    libraries = {}
    for name, samples in times.items():
        wall = statistics.median(sample[0] for sample in samples)
        cpu = statistics.median(sample[1] for sample in samples)
        libraries[name] = {
            "results_per_s": count / wall,
            "cpu_us_per_result": cpu / count * 1e6,
            "wall_s": wall,
        }
    ours = libraries["syncagg"]["results_per_s"]
    ratios = {name: ours / row["results_per_s"] for name, row in libraries.items() if name != "syncagg"}
    return {"count": count, "runs": runs, "libraries": libraries, "ratios": ratios}


def large_results(quick: bool = False, runs: int | None = None) -> dict[str, Any]:
    """Measure large array results for each array size; return GB/s, ratios and memcpy.

    Returns ``{"runs", "sizes": {MiB: {"count", "memcpy_gb_s", "libraries":
    {name: {"gb_s", "wall_s"}}, "ratios": {peer: syncagg / peer},
    "of_memcpy": {name: gb_s / memcpy}}}}``.
    """
    runs = runs or (RUNS_QUICK if quick else RUNS)
    sizes = {}
    for length, (full, short) in ARRAY_COUNTS.items():
        count = short if quick else full
        runners: dict[str, Runner] = {
            "syncagg": functools.partial(run_syncagg, functools.partial(array_result, length), _add_first),
            "syncagg, shared_array": functools.partial(
                run_syncagg, functools.partial(shared_array_result, length), _add_first
            ),
            "multiprocessing.Queue": functools.partial(run_mp_queue_arrays, length),
        }
        if _installed("faster_fifo"):
            runners["faster-fifo get_many"] = functools.partial(run_faster_fifo_arrays, length)

        memcpy = [memcpy_bandwidth(length)]
        times = _rounds(runners, count, array_expected(count), runs)
        memcpy.append(memcpy_bandwidth(length))
        sizes[8 * length // (1024 * 1024)] = _large_figures(times, count, 8 * length, statistics.median(memcpy))
    return {"runs": runs, "sizes": sizes}


def _large_figures(
    times: dict[str, list[tuple[float, float]]], count: int, nbytes: int, memcpy: float
) -> dict[str, Any]:
    libraries = {}
    for name, samples in times.items():
        wall = statistics.median(sample[0] for sample in samples)
        libraries[name] = {"gb_s": count * nbytes / wall / _GB, "wall_s": wall}
    ratios = {}
    for ours in ("syncagg", "syncagg, shared_array"):
        for name, row in libraries.items():
            if not name.startswith("syncagg"):
                ratios[f"{ours} / {name}"] = libraries[ours]["gb_s"] / row["gb_s"]
    of_memcpy = {name: row["gb_s"] / memcpy for name, row in libraries.items()}
    return {"count": count, "memcpy_gb_s": memcpy, "libraries": libraries, "ratios": ratios, "of_memcpy": of_memcpy}


def rows(quick: bool = True, repeat: int | None = None) -> list[dict[str, Any]]:
    """Return one flat row per workload and library, for a report that collects several modules."""
    result = []
    small = small_results(quick, repeat)
    for name, row in small["libraries"].items():
        result.append({"workload": "small dicts", "library": name, **row, "ratio": small["ratios"].get(name)})
    large = large_results(quick, repeat)
    for mib, figures in large["sizes"].items():
        for name, row in figures["libraries"].items():
            ratio = figures["ratios"].get(f"syncagg / {name}")
            result.append(
                {
                    "workload": f"{mib} MiB arrays",
                    "library": name,
                    **row,
                    "of_memcpy": figures["of_memcpy"][name],
                    "memcpy_gb_s": figures["memcpy_gb_s"],
                    "ratio": ratio,
                }
            )
    return result


# ---------------------------------------------------------------- report


def format_small(figures: dict[str, Any]) -> str:
    """Return the small-results table as text."""
    lines = [
        f"small dict results: {figures['count']:,} per run, median of {figures['runs']} runs",
        f"{'library':45} {'results/s':>12} {'parent CPU us/result':>21} {'syncagg / it':>13}",
    ]
    for name, row in figures["libraries"].items():
        ratio = figures["ratios"].get(name)
        shown = "" if ratio is None else f"{ratio:.2f}x"
        lines.append(f"{name:45} {row['results_per_s']:12,.0f} {row['cpu_us_per_result']:21.2f} {shown:>13}")
    return "\n".join(lines)


def format_large(figures: dict[str, Any]) -> str:
    """Return one table per array size as text."""
    lines = []
    for mib, size in figures["sizes"].items():
        lines.append(
            f"{mib} MiB float64 arrays: {size['count']} per run, median of {figures['runs']} runs; "
            f"memcpy into reused memory {size['memcpy_gb_s']:.2f} GB/s"
        )
        lines.append(f"{'library':25} {'GB/s':>7} {'of memcpy':>10} {'syncagg / it':>13} {'shared_array / it':>18}")
        for name, row in size["libraries"].items():
            plain = size["ratios"].get(f"syncagg / {name}")
            shared = size["ratios"].get(f"syncagg, shared_array / {name}")
            lines.append(
                f"{name:25} {row['gb_s']:7.2f} {size['of_memcpy'][name]:9.0%} "
                f"{'' if plain is None else f'{plain:.2f}x':>13} {'' if shared is None else f'{shared:.2f}x':>18}"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run both workloads and print their tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transport", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer results and runs, about a minute in all")
    parser.add_argument("--runs", type=int, default=None, help="runs per library; the median is reported")
    parser.add_argument("--only", choices=["small", "large"], default=None, help="run one workload only")
    options = parser.parse_args(argv)

    missing = [name for module, name in _OPTIONAL_PEERS if not _installed(module)]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}; pip install '.[bench]' to compare them", flush=True)
    if options.only in (None, "small"):
        print(format_small(small_results(options.quick, options.runs)), flush=True)
        print(flush=True)
    if options.only in (None, "large"):
        print(format_large(large_results(options.quick, options.runs)), flush=True)


def _main_from_package() -> None:
    # Run as ``python -m``, this file is ``__main__``, and functions pickled
    # by reference would point there. Importing it by its package name makes
    # every job function ``benchmarks.transport.<name>`` in the workers.
    from benchmarks import transport

    transport.main()


if __name__ == "__main__":
    _main_from_package()
