"""A slow collector blocks the workers through the ring; memory stays bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

import syncagg as sa
from tests import jobs

RESULT_BYTES = 200_000
COUNT = 300


def test_slow_consumer_blocks_workers(tmp_path: Path) -> None:
    started = tmp_path / "started"
    started.mkdir()
    consumed = 0
    ahead: list[int] = []

    def consume(result: sa.JobResult) -> None:
        nonlocal consumed
        consumed += 1
        ahead.append(len(os.listdir(started)) - consumed)
        time.sleep(0.005)

    # Each worker's region holds at most five results, and chunks of 100
    # let the workers run far ahead unless the full ring stops them.
    aggregator = sa.Aggregator(
        strategy=sa.Stream(consume),
        workers=2,
        progress=False,
        ring_size=2 * 1024 * 1024,
        batch_bytes=RESULT_BYTES,
        chunksize=100,
    )
    baseline = psutil.Process().memory_info().rss
    summary = aggregator.run(jobs.mark_started, [(str(started), x) for x in range(COUNT)])

    assert summary.counts["ok"] == COUNT
    assert consumed == COUNT
    # Per worker: five results in the ring, one being written, one running.
    assert max(ahead) <= 2 * 8
    assert summary.peak_memory - baseline < 40 * 1024 * 1024
