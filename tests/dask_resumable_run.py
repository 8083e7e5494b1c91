"""A checkpointed run on a LocalCluster of its own, which tests start in a subprocess and kill.

    python -m tests.dask_resumable_run OUT COUNT

Writes rows.jsonl, rows.parquet and run.sqlite into OUT. ``aggregator``
builds the same configuration for the test that resumes the run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import distributed

import syncagg as sa
from tests import jobs


def aggregator(out: Path, executor: Any) -> sa.Aggregator:
    """Return the aggregator of the killed run and of its resume."""
    return sa.Aggregator(
        strategy=sa.Reduce(jobs.add_square, 0),
        outputs=[out / "rows.jsonl", out / "rows.parquet"],
        checkpoint=out / "run.sqlite",
        executor=executor,
        progress=False,
        checkpoint_seconds=0.1,
        checkpoint_results=40,
    )


def main() -> None:
    out, count = Path(sys.argv[1]), int(sys.argv[2])
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    with cluster, distributed.Client(cluster) as client:
        aggregator(out, client).run(jobs.sleepy_square, range(count))


if __name__ == "__main__":
    main()
