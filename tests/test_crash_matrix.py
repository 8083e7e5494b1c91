"""SIGKILL at chosen points of the checkpoint and output paths, then resume.

Each case kills a run where it is most fragile, resumes it to the end, and
checks that every output holds each record exactly once and that the
reduced value equals a sequential sum.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_resume import COUNT, EXPECTED_VALUE, ROOT, _check_outputs, _finish

CASES = [
    ("checkpoint-staged", 3),
    ("checkpoint-committed", 2),
    ("jsonl-write", 5),
    ("parquet-row-group", 1),
    ("ipc-batch", 2),
    ("before-publish", 1),
    ("before-publish", 3),
    ("after-rename", 1),
    ("after-rename", 2),
    ("after-rename", 4),
    ("parts-removal", 1),
    ("parts-removal", 2),
]


def _crash(out: Path, point: str, after: int) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "tests.crash_run", point, str(after), str(out), str(COUNT)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize(("point", "after"), CASES, ids=[f"{p}-{a}" for p, a in CASES])
def test_kill_at_point_then_resume(tmp_path: Path, point: str, after: int) -> None:
    crashed = _crash(tmp_path, point, after)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()

    report = _finish(tmp_path)

    assert report["value"] == EXPECTED_VALUE
    assert report["counts"]["ok"] == COUNT  # type: ignore[index]
    _check_outputs(tmp_path)


def test_kills_at_every_point_in_turn(tmp_path: Path) -> None:
    for point, after in CASES:
        crashed = _crash(tmp_path, point, after)
        finished = crashed.returncode == 0
        assert finished or crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
        if finished:
            break

    report = json.loads((tmp_path / "value.json").read_text()) if finished else _finish(tmp_path)

    assert report["value"] == EXPECTED_VALUE
    _check_outputs(tmp_path)
