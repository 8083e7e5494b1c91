"""Job timeouts in worker processes."""

from __future__ import annotations

import pytest

import syncagg as sa
from tests import cli_jobs


@pytest.mark.timeout(120)
def test_timeout_fails_after_retries() -> None:
    aggregator = sa.Aggregator(workers=2, timeout=0.5, retries=1, progress=False)

    summary = aggregator.run(cli_jobs.hang_on_three, range(6))

    assert summary.counts["ok"] == 5
    assert summary.counts["failed"] == 1
    assert sorted(row["x"] for row in summary.value) == [0, 1, 2, 4, 5]
    failure = summary.failures[0]
    assert failure.job_id == 3
    assert failure.attempts == 2
    assert failure.error is not None
    assert failure.error.type == "syncagg.Timeout"
    assert "ran longer than the 0.5 s timeout" in failure.error.message


def test_fast_jobs_keep_their_worker() -> None:
    aggregator = sa.Aggregator(workers=2, timeout=5, progress=False)

    summary = aggregator.run(cli_jobs.square, range(200))

    assert summary.counts["ok"] == 200
    assert summary.counts["failed"] == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"timeout": 0}, r"timeout must be a positive number, got 0"),
        (
            {"timeout": 1, "workers": sa.Threads(2)},
            r"timeout works with worker processes only",
        ),
    ],
    ids=["zero", "threads"],
)
def test_bad_timeout_raises(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sa.Aggregator(**settings)  # type: ignore[arg-type]
