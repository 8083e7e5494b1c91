"""The memory budget: sizes, the Collect limit, and backpressure for streaming runs."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import psutil
import pytest

import syncagg as sa
from syncagg.memory import MemoryBudget, format_bytes, parse_memory, tree_memory
from tests import cli_jobs

MiB = 1024 * 1024
RESULT_BYTES = 4 * MiB
COUNT = 100


def big_result(x: int) -> bytes:
    """Return 4 MiB after 20 ms, so a run spans several memory readings."""
    time.sleep(0.02)
    return bytes([x % 251]) * RESULT_BYTES


def add_length(total: int, value: bytes) -> int:
    return total + len(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1000, 1000),
        ("1000", 1000),
        ("512B", 512),
        ("4KiB", 4096),
        ("512MiB", 512 * MiB),
        ("4GiB", 4 * 1024 * MiB),
        ("1.5 GiB", int(1.5 * 1024 * MiB)),
        ("2gb", 2_000_000_000),
        ("1TiB", 1024**4),
    ],
)
def test_parse_memory_sizes(value: int | str, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize(
    "value", [0, -5, True, 2.5, "", "4 apples", "GiB", "0MiB", "-1GiB", None]
)
def test_parse_memory_rejects(value: object) -> None:
    with pytest.raises(
        ValueError,
        match="max_memory must be a positive int of bytes, or a string such as",
    ) as info:
        parse_memory(value)
    assert repr(value) in str(info.value)


def test_aggregator_rejects_bad_budget() -> None:
    with pytest.raises(ValueError, match=r"max_memory must be .*got '4 apples'"):
        sa.Aggregator(max_memory="4 apples")


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024 * MiB) == "3.0 GiB"


def test_tree_memory_counts_children() -> None:
    alone = tree_memory(psutil.Process())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        together = tree_memory(psutil.Process())
    finally:
        child.kill()
        child.wait()

    assert alone > 0
    assert together > alone + MiB


def test_collect_over_budget_raises() -> None:
    budget = tree_memory(psutil.Process()) + 100 * MiB
    aggregator = sa.Aggregator(
        strategy=sa.Collect(), workers=2, progress=False, max_memory=budget
    )

    with pytest.raises(sa.MemoryLimitError) as info:
        aggregator.run(big_result, range(COUNT))

    message = str(info.value)
    assert (
        f"passed the budget max_memory={format_bytes(budget)} ({budget} bytes)"
        in message
    )
    assert "use a streaming strategy such as Reduce, Merge or Stream" in message
    assert "or write the results to outputs" in message


def test_streaming_run_under_budget_completes() -> None:
    budget = tree_memory(psutil.Process()) + 400 * MiB
    aggregator = sa.Aggregator(
        strategy=sa.Reduce(add_length, 0), workers=2, progress=False, max_memory=budget
    )

    summary = aggregator.run(big_result, range(COUNT))

    assert summary.counts["ok"] == COUNT
    assert summary.value == COUNT * RESULT_BYTES


def test_streaming_run_over_budget_throttles(caplog: pytest.LogCaptureFixture) -> None:
    # A budget below what the process already uses: every reading is above
    # the soft limit, so jobs go out only when none are in flight.
    aggregator = sa.Aggregator(
        strategy=sa.Reduce(cli_jobs.count_jobs, 0),
        workers=2,
        progress=False,
        max_memory="1MiB",
    )

    with caplog.at_level(logging.WARNING, logger="syncagg.memory"):
        summary = aggregator.run(cli_jobs.square, range(50))

    assert summary.counts["ok"] == 50
    assert summary.value == 50
    warnings = [r.getMessage() for r in caplog.records if r.name == "syncagg.memory"]
    assert len(warnings) == 1
    assert "above 90% of the budget 1.0 MiB" in warnings[0]
    assert warnings[0].startswith("memory use ")


def test_budget_waits_for_jobs_in_flight() -> None:
    budget = MemoryBudget(limit=1, collecting=False)

    assert budget.allows_dispatch(in_flight=3) is False
    assert budget.paused is True
    assert budget.allows_dispatch(in_flight=0) is True


def test_budget_allows_below_soft_limit() -> None:
    budget = MemoryBudget(limit=1024**5, collecting=True)

    assert budget.allows_dispatch(in_flight=3) is True
    assert budget.paused is False
    assert budget.usage > 0
