"""A run whose later jobs hang, for tests that interrupt it twice.

    python -m tests.stuck_run OUT

Jobs 0 to 19 finish at once and jobs 20 to 39 sleep 60 s, unless
SYNCAGG_TEST_FAST is set. No checkpoint is due before the stop, so the
only one is the last, written as the run stops.
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
        # Each result goes out as it finishes, before a hanging job starts.
        batch_bytes=1,
        progress=False,
        checkpoint_seconds=3600,
        checkpoint_results=1_000_000,
        stop_timeout=120,
    )
    aggregator.run(jobs.stuck_from_20, [(str(started), x) for x in range(40)])


if __name__ == "__main__":
    main()
