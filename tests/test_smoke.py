"""A first end-to-end run through every hop."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

import syncagg as sa
from tests import jobs


def test_reduce_with_outputs(tmp_path: Path) -> None:
    aggregator = sa.Aggregator(
        strategy=sa.Reduce(jobs.add_square, 0),
        outputs=[tmp_path / "rows.parquet", tmp_path / "rows.jsonl"],
        workers=2,
        progress=False,
    )
    summary = aggregator.run(jobs.square, range(1000))

    assert summary.value == sum(x * x for x in range(1000))
    assert summary.counts["ok"] == 1000
    assert pq.read_table(tmp_path / "rows.parquet").num_rows == 1000
