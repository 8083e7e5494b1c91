"""Random result sizes, delays and a slow consumer: every result arrives once, intact, in worker order."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import numpy as np
import pytest

import syncagg as sa
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
