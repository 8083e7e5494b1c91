"""Signals and exits at the edges of a run, with real processes and checkpoints."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.checkpoints import done_jobs
from tests.test_resume import COUNT, EXPECTED_VALUE, ROOT, _check_outputs, _finish


def _start(mode: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.lifecycle_run", mode, str(out), str(COUNT)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, f"{path} did not appear within 60 s"
        time.sleep(0.01)


def test_sigterm_while_counting_inputs(tmp_path: Path) -> None:
    # The SIGTERM arrives before the run loop exists. The run still starts,
    # stops before sending any job, keeps its checkpoint and exits with 143.
    process = _start("slow-start", tmp_path)
    _wait_for(tmp_path / "counting", process)

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signal.SIGTERM, stderr.decode()
    assert "SIGTERM" in stderr.decode()
    assert done_jobs(tmp_path / "run.sqlite") == 0

    rerun = _start("slow-start", tmp_path)
    _, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr.decode()
    report = json.loads((tmp_path / "value.json").read_text())
    assert report["value"] == EXPECTED_VALUE
    _check_outputs(tmp_path)


def test_run_in_daemon_thread_stops_at_exit(tmp_path: Path) -> None:
    # The main thread returns while the run goes on in a daemon thread. The
    # interpreter's exit stops the run after a last checkpoint instead of
    # waiting forever for workers that ignore multiprocessing's SIGTERM.
    process = _start("daemon-thread", tmp_path)
    _wait_for(tmp_path / "run.sqlite", process)
    workers = psutil.Process(process.pid).children()

    stdout, stderr = process.communicate(timeout=60)
    gone, alive = psutil.wait_procs(workers, timeout=10)

    assert process.returncode == 0, stderr.decode()
    assert stdout.decode() == "leaving\n"
    assert alive == []
    # run() ended its thread instead of returning a summary of part of the run.
    assert not (tmp_path / "returned").exists()
    stopped_at = done_jobs(tmp_path / "run.sqlite")
    assert 50 <= stopped_at < COUNT
    report = _finish(tmp_path)
    assert report["value"] == EXPECTED_VALUE
    assert report["counts"]["resumed"] == stopped_at  # type: ignore[index]
    _check_outputs(tmp_path)
