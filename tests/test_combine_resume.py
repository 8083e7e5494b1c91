"""Combine resumes after SIGKILL with every result folded exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests import combine_jobs
from tests.checkpoints import done_jobs
from tests.combine_resumable_run import COMBINER

ROOT = Path(__file__).resolve().parent.parent
COUNT = 600


def _start(out: Path, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.combine_resumable_run", str(out), str(COUNT), mode],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )


def _done_jobs(out: Path) -> int:
    return done_jobs(out / "run.sqlite")


def _kill_after_checkpoint(out: Path, process: subprocess.Popen[bytes], at_least: int) -> None:
    deadline = time.monotonic() + 60
    while _done_jobs(out) < at_least:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.02)

    workers = psutil.Process(process.pid).children()
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    if process.stderr:
        process.stderr.close()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []


@pytest.mark.parametrize("mode", ["collector", "workers"])
def test_combine_resumes_after_sigkill(tmp_path: Path, mode: str) -> None:
    _kill_after_checkpoint(tmp_path, _start(tmp_path, mode), 100)

    process = _start(tmp_path, mode)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()
    report = json.loads((tmp_path / "value.json").read_text())

    expected = COMBINER.fold(combine_jobs.row(x) for x in range(COUNT))
    assert report["value"] == expected
    assert report["counts"]["ok"] == COUNT
    assert report["counts"]["resumed"] >= 100
