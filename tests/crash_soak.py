"""The long variant of the crash tests, run by hand.

    python -m tests.crash_soak [--kills 50] [--count 3000] [--seed 1]

Starts the checkpointed run of ``tests.resumable_run`` again and again,
each time SIGKILLing it after a random delay, at random points of its
checkpoint and output paths too, then lets it finish and checks that every
output holds each record exactly once and that the reduced value is right.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import test_resume

POINTS = [
    "checkpoint-staged",
    "checkpoint-committed",
    "jsonl-write",
    "parquet-row-group",
    "ipc-batch",
    "after-rename",
    "parts-removal",
]


def _one_kill(out: Path, count: int, rng: random.Random) -> bool:
    """Run once and kill it; return True if the run finished before the kill."""
    if rng.random() < 0.5:
        command = ["-m", "tests.resumable_run", str(out), str(count)]
        process = subprocess.Popen([sys.executable, *command], cwd=test_resume.ROOT)
        time.sleep(rng.uniform(0.2, 3.0))
        process.send_signal(signal.SIGKILL)
        return process.wait() == 0

    point, after = rng.choice(POINTS), rng.randint(1, 6)
    command = ["-m", "tests.crash_run", point, str(after), str(out), str(count)]
    return subprocess.run([sys.executable, *command], cwd=test_resume.ROOT, check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="runs to kill (default: 50)")
    parser.add_argument("--count", type=int, default=3000, help="jobs in the run (default: 3000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    test_resume.COUNT = args.count
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for kill in range(args.kills):
            if _one_kill(out, args.count, rng):
                print(f"the run finished after {kill} kills", file=sys.stderr)
                break
        else:
            command = [sys.executable, "-m", "tests.resumable_run", str(out), str(args.count)]
            subprocess.run(command, cwd=test_resume.ROOT, check=True)

        report = json.loads((out / "value.json").read_text())
        assert report["value"] == sum(x * x for x in range(args.count)), report
        test_resume._check_outputs(out)
    print(f"exactly once after up to {args.kills} kills: {report['counts']}", file=sys.stderr)


if __name__ == "__main__":
    main()
