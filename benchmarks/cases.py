"""The workloads: what each runs, at which sizes, on syncagg and on each peer.

A variant is one library's way of running the workload. The first variant
of a workload is the reference that the others are compared with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import jobs, peers, sinks
from syncagg.aggregator import Aggregator
from syncagg.records import JobResult
from syncagg.strategies import Reduce, Strategy, Stream

Driver = Callable[[int, Path], None]
# Chunk sizes for the peers: 1000 small results make a chunk of about
# 100 KiB; larger results go one or a hundred at a time.
SMALL_CHUNK = 1000
PADDED_CHUNK = 100
ARRAY_CHUNK = 1


@dataclass(frozen=True)
class Variant:
    """One library's way of running a workload."""

    library: str
    run: Driver
    requires: str | None = None


@dataclass(frozen=True)
class Workload:
    """A job, its sizes in each mode, and the variants that run it."""

    name: str
    title: str
    method: str
    unit: str
    sizes: dict[str, tuple[int, ...]]
    variants: tuple[Variant, ...]


class FoldResults:
    """A ``Stream`` consumer that folds each ``JobResult.value`` with ``add_row``."""

    def __init__(self) -> None:
        self.totals = [0, 0.0, 0]

    def __call__(self, result: JobResult) -> None:
        jobs.add_row(self.totals, result.value)


def run_syncagg(fn: peers.Job, make: Callable[[Path], Aggregator], size: int, workdir: Path) -> None:
    """Run ``fn`` over ``range(size)`` with the aggregator that ``make`` builds."""
    make(workdir).run(fn, range(size))


def run_peer(
    peer: peers.Peer, fn: peers.Job, chunksize: int, make_sink: Callable[[Path], sinks.Sink], size: int, workdir: Path
) -> None:
    """Run ``fn`` over ``range(size)`` on a peer and hand each result to a sink."""
    sink = make_sink(workdir)
    for value in peer(fn, range(size), chunksize):
        sink.add(value)
    sink.close()


def syncagg_variant(label: str, fn: peers.Job, make: Callable[[Path], Aggregator]) -> Variant:
    return Variant(label, functools.partial(run_syncagg, fn, make))


def peer_variant(
    label: str, peer: peers.Peer, fn: peers.Job, chunksize: int, make_sink: Callable[[Path], sinks.Sink]
) -> Variant:
    driver = functools.partial(run_peer, peer, fn, chunksize, make_sink)
    return Variant(label, driver, peers.REQUIRES[peer])


def aggregator(workdir: Path, strategy: Strategy, outputs: tuple[str, ...] = (), **settings: Any) -> Aggregator:
    """Build an Aggregator with ``WORKERS`` processes and files under ``workdir``."""
    paths = [workdir / name for name in outputs]
    return Aggregator(strategy=strategy, outputs=paths, workers=peers.WORKERS, progress=False, **settings)


def new_totals() -> list[Any]:
    return [0, 0.0, 0]


def small_dicts() -> Workload:
    def make(workdir: Path) -> Aggregator:
        return aggregator(workdir, Reduce(jobs.add_row, new_totals()), ("rows.parquet",))

    def sink(workdir: Path) -> sinks.Sink:
        return sinks.Fanout(sinks.Fold(jobs.add_row, new_totals()), sinks.ParquetRows(workdir / "rows.parquet"))

    return Workload(
        "small_dicts",
        "Small dict results, summed and written to Parquet",
        "Each job returns a six-field dict; the parent adds up two fields and writes every row to one zstd Parquet file.",
        "results/s",
        {"full": (10_000_000,), "quick": (50_000,), "tiny": (2_000,)},
        (
            syncagg_variant("syncagg Reduce", jobs.small_row, make),
            *standard_peers(jobs.small_row, SMALL_CHUNK, sink),
        ),
    )


def standard_peers(fn: peers.Job, chunksize: int, sink: Callable[[Path], sinks.Sink]) -> tuple[Variant, ...]:
    """Build the four peers as most scripts use them, with ``ProcessPoolExecutor.map`` into a list."""
    return (
        peer_variant("Pool.imap_unordered", peers.pool_imap_unordered, fn, chunksize, sink),
        peer_variant("ProcessPoolExecutor.map, list", peers.executor_map_list, fn, chunksize, sink),
        peer_variant("mpire imap_unordered", peers.mpire_imap_unordered, fn, chunksize, sink),
        peer_variant("joblib generator_unordered", peers.joblib_unordered, fn, chunksize, sink),
    )


def iterating_peers(fn: peers.Job, chunksize: int, sink: Callable[[Path], sinks.Sink]) -> tuple[Variant, ...]:
    """Build the four peers, each consumed as it yields: ``ProcessPoolExecutor.map`` without a list."""
    return (
        peer_variant("Pool.imap_unordered", peers.pool_imap_unordered, fn, chunksize, sink),
        peer_variant("ProcessPoolExecutor.map", peers.executor_map, fn, chunksize, sink),
        peer_variant("mpire imap_unordered", peers.mpire_imap_unordered, fn, chunksize, sink),
        peer_variant("joblib generator_unordered", peers.joblib_unordered, fn, chunksize, sink),
    )


def arrays() -> Workload:
    def make(workdir: Path) -> Aggregator:
        return aggregator(workdir, Reduce(jobs.add_array, None))

    def sink(workdir: Path) -> sinks.Sink:
        return sinks.Fold(jobs.add_array, None)

    return Workload(
        "arrays",
        "1 MiB numpy arrays, summed element by element",
        "Each job returns a 1 MiB float64 array; the parent adds each into one running total in place. "
        "ProcessPoolExecutor.map is iterated, not listed, since a list would hold every array.",
        "MiB/s",
        {"full": (4096,), "quick": (64,), "tiny": (8,)},
        (
            syncagg_variant("syncagg Reduce", jobs.array_result, make),
            *iterating_peers(jobs.array_result, ARRAY_CHUNK, sink),
        ),
    )


def formats() -> Workload:
    names = ("rows.jsonl", "rows.csv", "rows.parquet")

    def make(workdir: Path) -> Aggregator:
        return aggregator(workdir, Reduce(jobs.count_one, 0), names)

    def sink(workdir: Path) -> sinks.Sink:
        return sinks.Fanout(
            sinks.Fold(jobs.count_one, 0),
            sinks.JsonLinesRows(workdir / names[0]),
            sinks.CsvRows(workdir / names[1]),
            sinks.ParquetRows(workdir / names[2]),
        )

    return Workload(
        "formats",
        "Rows to JSON Lines, CSV and Parquet at once",
        "Each job returns a six-field dict; the parent writes every row to a JSON Lines, a CSV and a Parquet "
        "file. The peers' loop buffers 65,536 rows and writes them with orjson, csv.writer and pyarrow.",
        "results/s",
        {"full": (1_000_000,), "quick": (30_000,), "tiny": (2_000,)},
        (syncagg_variant("syncagg, 3 outputs", jobs.small_row, make), *standard_peers(jobs.small_row, SMALL_CHUNK, sink)),
    )


def slow_consumer() -> Workload:
    def make(workdir: Path) -> Aggregator:
        return aggregator(workdir, Stream(jobs.SlowConsumer()))

    def sink(workdir: Path) -> sinks.Sink:
        return sinks.Consume(jobs.SlowConsumer())

    return Workload(
        "slow_consumer",
        "A slow consumer: 1 KiB results, consumed at most 50,000/s",
        "Each job returns a dict with 1 KiB of text; the consumer sleeps 1 ms every 50 results, so the "
        "workers produce faster than the parent consumes. Flat memory means the same peak at both sizes.",
        "results/s",
        {"full": (100_000, 400_000), "quick": (4_000, 16_000), "tiny": (500, 1_000)},
        (
            syncagg_variant("syncagg Stream", jobs.padded_row, make),
            *iterating_peers(jobs.padded_row, PADDED_CHUNK, sink),
        ),
    )


def checkpoints(outputs: tuple[str, ...]) -> Workload:
    """Build the checkpoint workload: default checkpoints against none, with the given outputs."""

    def make(checkpoint: bool) -> Callable[[Path], Aggregator]:
        def build(workdir: Path) -> Aggregator:
            path = workdir / "run.sqlite" if checkpoint else None
            return aggregator(workdir, Reduce(jobs.add_row, new_totals()), outputs, checkpoint=path)

        return build

    files = "and its Parquet output" if outputs else "with no output file"
    return Workload(
        "checkpoints" if outputs else "checkpoints_no_output",
        f"The cost of checkpoints at the default interval, {'with' if outputs else 'without'} an output",
        f"The small_dicts job on syncagg alone, {files}, with a checkpoint at the default interval (every "
        "30 s or 100,000 results, whichever comes first) and without a checkpoint file.",
        "results/s",
        {"full": (2_000_000,), "quick": (150_000,), "tiny": (2_000,)},
        (
            syncagg_variant("syncagg, default checkpoints", jobs.small_row, make(True)),
            syncagg_variant("syncagg, no checkpoint", jobs.small_row, make(False)),
        ),
    )


def memory() -> Workload:
    def reduce(workdir: Path) -> Aggregator:
        return aggregator(workdir, Reduce(jobs.add_row, new_totals()))

    def stream(workdir: Path) -> Aggregator:
        return aggregator(workdir, Stream(FoldResults()))

    def sink(workdir: Path) -> sinks.Sink:
        return sinks.Fold(jobs.add_row, new_totals())

    row, chunk = jobs.small_row, SMALL_CHUNK
    return Workload(
        "memory",
        "Peak memory at two sizes: small dicts summed, no files",
        "Each job returns a six-field dict and the parent adds up two fields. The peers that collect a "
        "list first keep every result until the run ends.",
        "results/s",
        {"full": (1_000_000, 10_000_000), "quick": (30_000, 120_000), "tiny": (1_000, 2_000)},
        (
            syncagg_variant("syncagg Reduce", row, reduce),
            syncagg_variant("syncagg Stream", row, stream),
            peer_variant("Pool.imap_unordered", peers.pool_imap_unordered, row, chunk, sink),
            peer_variant("Pool.imap_unordered, list", peers.pool_imap_unordered_list, row, chunk, sink),
            peer_variant("ProcessPoolExecutor.map, list", peers.executor_map_list, row, chunk, sink),
            peer_variant("mpire imap_unordered", peers.mpire_imap_unordered, row, chunk, sink),
            peer_variant("joblib generator_unordered", peers.joblib_unordered, row, chunk, sink),
        ),
    )


WORKLOADS: dict[str, Workload] = {
    workload.name: workload
    for workload in (
        small_dicts(), arrays(), formats(), slow_consumer(),
        checkpoints(("rows.parquet",)), checkpoints(()), memory(),
    )
}
