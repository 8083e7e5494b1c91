"""A Combine run with a checkpoint that tests start in a subprocess and kill.

    python -m tests.combine_resumable_run OUT COUNT MODE

MODE is ``collector`` or ``workers`` (``Combine(..., in_workers=True)``).
Writes run.sqlite into OUT, and on success value.json with the combined
value and the counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import syncagg as sa
from tests import combine_jobs

COMBINER = sa.GroupBy("group", sa.Sum("lines"))


def main() -> None:
    out, count, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    aggregator = sa.Aggregator(
        strategy=sa.Combine(COMBINER, in_workers=mode == "workers"),
        checkpoint=out / "run.sqlite",
        workers=2,
        progress=False,
        checkpoint_seconds=0.1,
        checkpoint_results=40,
    )
    summary = aggregator.run(combine_jobs.sleepy_row, range(count))
    report = {"value": summary.value, "counts": dict(summary.counts)}
    (out / "value.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
