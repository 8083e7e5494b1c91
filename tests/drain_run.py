"""A run of slow jobs that tests interrupt to see jobs in flight finish.

    python -m tests.drain_run OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import syncagg as sa
from tests import jobs


def main() -> None:
    out = Path(sys.argv[1])
    started = out / "started"
    started.mkdir(exist_ok=True)
    aggregator = sa.Aggregator(
        outputs=[out / "rows.jsonl"],
        checkpoint=out / "run.sqlite",
        workers=2,
        chunksize=1,
        progress=False,
    )
    aggregator.run(jobs.mark_and_sleep, [(str(started), x) for x in range(200)])


if __name__ == "__main__":
    main()
