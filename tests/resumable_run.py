"""A run with a checkpoint that tests start in a subprocess and kill.

    python -m tests.resumable_run OUT COUNT

Writes rows.jsonl, rows.json, rows.csv, rows.parquet, rows.arrow and
run.sqlite into OUT, and on success value.json with the reduced value and
the counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import syncagg as sa
from tests import jobs


def make_aggregator(out: Path) -> sa.Aggregator:
    """Return the aggregator of this run, writing into ``out``."""
    return sa.Aggregator(
        strategy=sa.Reduce(jobs.add_square, 0),
        outputs=[
            out / "rows.jsonl",
            out / "rows.json",
            out / "rows.csv",
            out / "rows.parquet",
            out / "rows.arrow",
        ],
        checkpoint=out / "run.sqlite",
        workers=2,
        progress=False,
        checkpoint_seconds=0.1,
        checkpoint_results=40,
    )


def main() -> None:
    out, count = Path(sys.argv[1]), int(sys.argv[2])
    summary = make_aggregator(out).run(jobs.sleepy_square, range(count))
    report = {"value": summary.value, "counts": dict(summary.counts)}
    (out / "value.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
