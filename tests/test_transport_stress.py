"""Random result sizes, delays and a slow consumer: every result arrives once, intact, in worker order."""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict

import numpy as np
import pytest

import syncagg as sa
from syncagg.segments import SHM_DIR
from tests import transport_jobs

_MiB = 1024 * 1024
_JOBS = 600


@pytest.mark.timeout(120)
def test_random_sizes_arrive_once_in_order() -> None:
    arrivals: list[int] = []
    by_worker: dict[int, list[int]] = defaultdict(list)
    mismatched: list[int] = []

    def consume(result: sa.JobResult) -> None:
        arrivals.append(result.job_id)
        by_worker[result.worker_pid].append(result.job_id)
        value = result.value
        data = value if isinstance(value, bytes) else bytes(np.asarray(value, dtype=np.uint8))
        if data != transport_jobs.payload_bytes(result.job_id):
            mismatched.append(result.job_id)
        # A slow consumer: the workers fill their regions and wait for space.
        if len(arrivals) % 4 == 0:
            time.sleep(0.001)

    # Four workers on two cores, 1 MiB regions: the largest payloads travel
    # in segments of their own, and shared arrays that do not fit beside
    # the unsent ones fall back to plain arrays.
    aggregator = sa.Aggregator(
        strategy=sa.Stream(consume),
        workers=4,
        progress=False,
        ring_size=4 * _MiB,
        batch_bytes=256 * 1024,
    )
    summary = aggregator.run(transport_jobs.stress_payload, range(_JOBS))

    sizes = [transport_jobs.payload_size(x) for x in range(_JOBS)]
    repeated = [job_id for job_id, seen in Counter(arrivals).items() if seen > 1]
    assert summary.counts["ok"] == _JOBS
    assert summary.counts["failed"] == 0
    assert repeated == []
    assert sorted(arrivals) == list(range(_JOBS))
    assert mismatched == []
    # The sizes cover the empty payload and payloads larger than a region.
    assert min(sizes) == 0
    assert max(sizes) > _MiB
    assert len(by_worker) >= 4
    for pid, job_ids in by_worker.items():
        assert job_ids == sorted(job_ids), f"worker {pid} results out of order"


def _one_off_segments(prefix: str) -> list[str]:
    return [name for name in os.listdir(SHM_DIR) if name.startswith(prefix) and not name.endswith("ring")]


@pytest.mark.timeout(60)
def test_oversized_results_wait_for_consumer() -> None:
    # Each row is four times a region: it travels in a segment of its own.
    # A worker writes its next such segment only after the parent has read
    # the last, so with a slow consumer each worker keeps at most one segment in shared memory.
    prefix = f"syncagg-{os.getpid()}-"
    seen: list[int] = []
    largest = 0

    def consume(result: sa.JobResult) -> None:
        nonlocal largest
        time.sleep(0.05)
        largest = max(largest, len(_one_off_segments(prefix)))
        value = result.value
        assert value["data"] == bytes([value["x"] % 256]) * (4 * _MiB)
        seen.append(value["x"])

    aggregator = sa.Aggregator(
        strategy=sa.Stream(consume), workers=2, progress=False, ring_size=2 * _MiB, chunksize=4
    )
    summary = aggregator.run(transport_jobs.big_row, range(16))

    assert summary.counts["ok"] == 16
    assert sorted(seen) == list(range(16))
    # One segment per worker waits to be read; the one being read is unlinked after.
    assert 1 <= largest <= 2
