"""A stream with a checkpoint that tests start in a subprocess and stop with SIGTERM.

    python -m tests.stream_run OUT COUNT

Prints the job id of each result the loop takes, one per line, and writes
rows.jsonl and run.sqlite into OUT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import syncagg as sa
from tests import jobs


def main() -> None:
    out, count = Path(sys.argv[1]), int(sys.argv[2])
    aggregator = sa.Aggregator(
        outputs=[out / "rows.jsonl"],
        checkpoint=out / "run.sqlite",
        workers=2,
        progress=False,
        checkpoint_seconds=0.1,
        checkpoint_results=40,
    )
    for result in aggregator.stream(jobs.sleepy_square, range(count)):
        print(result.job_id, flush=True)


if __name__ == "__main__":
    main()
