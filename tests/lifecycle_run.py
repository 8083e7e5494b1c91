"""The run of ``tests.resumable_run``, stopped at the edges of its life.

    python -m tests.lifecycle_run MODE OUT COUNT

MODE is one of:

- ``slow-start``: counting the inputs takes 3 s, and creates ``OUT/counting``
  when it begins, so a test can send a signal before the run loop starts.
  A run that completes writes ``OUT/value.json`` as ``tests.resumable_run`` does.
- ``daemon-thread``: the run goes on in a daemon thread, and the main thread
  returns once a checkpoint records 50 jobs, so the interpreter exits while
  the run is still going. Were ``run`` to return, it would create
  ``OUT/returned``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests import jobs
from tests.checkpoints import done_jobs
from tests.resumable_run import make_aggregator


class SlowCount:
    """``range(count)`` whose ``len`` takes 3 s and leaves a marker file."""

    def __init__(self, marker: Path, count: int) -> None:
        self.marker = marker
        self.count = count

    def __len__(self) -> int:
        self.marker.touch()
        time.sleep(3)
        return self.count

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.count))


def main() -> None:
    mode, out, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    aggregator = make_aggregator(out)
    if mode == "slow-start":
        summary = aggregator.run(jobs.sleepy_square, SlowCount(out / "counting", count))
        report = {"value": summary.value, "counts": dict(summary.counts)}
        (out / "value.json").write_text(json.dumps(report))
        return
    if mode != "daemon-thread":
        raise SystemExit(f"unknown mode {mode!r}")

    def run_then_mark() -> None:
        # Reached only if run() returns: a run stopped by the exit must not.
        aggregator.run(jobs.sleepy_square, range(count))
        (out / "returned").touch()

    thread = threading.Thread(target=run_then_mark, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while done_jobs(out / "run.sqlite") < 50:
        if time.monotonic() > deadline:
            raise SystemExit("no checkpoint of 50 jobs within 60 s")
        time.sleep(0.02)
    print("leaving", flush=True)


if __name__ == "__main__":
    main()
