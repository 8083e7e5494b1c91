"""Resuming after a real kill: every output contains each record exactly once."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.checkpoints import done_jobs

ROOT = Path(__file__).resolve().parent.parent
COUNT = 600
EXPECTED_VALUE = sum(x * x for x in range(COUNT))


def _start(out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.resumable_run", str(out), str(COUNT)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )


def _done_jobs(out: Path) -> int:
    return done_jobs(out / "run.sqlite")


def _wait_for_checkpoint(out: Path, process: subprocess.Popen[bytes], at_least: int) -> None:
    deadline = time.monotonic() + 60
    while _done_jobs(out) < at_least:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.02)


def _kill(process: subprocess.Popen[bytes], signum: int) -> int:
    workers = psutil.Process(process.pid).children()
    process.send_signal(signum)
    code = process.wait(timeout=60)
    if process.stderr:
        process.stderr.close()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []
    return code


def _start_marking(module: str, out: Path, jobs_started: int) -> subprocess.Popen[bytes]:
    """Start a run whose jobs mark themselves in ``out/started``; wait until that many have."""
    process = subprocess.Popen([sys.executable, "-m", module, str(out)], cwd=ROOT, stderr=subprocess.PIPE)
    started = out / "started"
    deadline = time.monotonic() + 60
    while not started.is_dir() or len(list(started.iterdir())) < jobs_started:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, f"{jobs_started} jobs did not start within 60 s"
        time.sleep(0.02)
    return process


def _finish(out: Path) -> dict[str, object]:
    process = _start(out)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()
    return json.loads((out / "value.json").read_text())  # type: ignore[no-any-return]


def _check_outputs(out: Path) -> None:
    expected = list(range(COUNT))

    lines = (out / "rows.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["x"] for line in lines) == expected

    with open(out / "rows.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(int(row["x"]) for row in rows) == expected

    table = pq.read_table(out / "rows.parquet")
    assert sorted(table.column("x").to_pylist()) == expected
    assert sorted(table.column("square").to_pylist()) == sorted(x * x for x in expected)

    array = json.loads((out / "rows.json").read_text())
    assert sorted(row["x"] for row in array) == expected

    with pa.OSFile(str(out / "rows.arrow"), "rb") as source:
        arrow = pa.ipc.open_file(source).read_all()
    assert sorted(arrow.column("x").to_pylist()) == expected

    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert leftovers == []


def test_resume_after_sigkill(tmp_path: Path) -> None:
    process = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, process, 100)
    assert _kill(process, signal.SIGKILL) == -signal.SIGKILL
    assert not (tmp_path / "rows.parquet").exists()

    report = _finish(tmp_path)

    assert report["value"] == EXPECTED_VALUE
    assert report["counts"]["ok"] == COUNT  # type: ignore[index]
    assert report["counts"]["resumed"] >= 100  # type: ignore[index]
    _check_outputs(tmp_path)


def test_resume_after_repeated_kills(tmp_path: Path) -> None:
    for at_least in (60, 200, 380):
        process = _start(tmp_path)
        _wait_for_checkpoint(tmp_path, process, at_least)
        _kill(process, signal.SIGKILL)

    report = _finish(tmp_path)

    assert report["value"] == EXPECTED_VALUE
    assert report["counts"]["ok"] == COUNT  # type: ignore[index]
    _check_outputs(tmp_path)


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, -signal.SIGINT), (signal.SIGTERM, 128 + signal.SIGTERM)],
    ids=["sigint", "sigterm"],
)
def test_resume_after_signal(tmp_path: Path, signum: int, code: int) -> None:
    process = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, process, 100)
    assert _kill(process, signum) == code

    report = _finish(tmp_path)

    assert report["value"] == EXPECTED_VALUE
    _check_outputs(tmp_path)


def test_rerun_after_finish(tmp_path: Path) -> None:
    first = _finish(tmp_path)
    contents = {p.name: p.read_bytes() for p in tmp_path.glob("rows.*")}

    second = _finish(tmp_path)

    assert second["value"] == first["value"]
    assert second["counts"]["resumed"] == COUNT  # type: ignore[index]
    assert {p.name: p.read_bytes() for p in tmp_path.glob("rows.*")} == contents


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_stop_lets_jobs_in_flight_finish(tmp_path: Path, signum: int) -> None:
    process = _start_marking("tests.drain_run", tmp_path, jobs_started=3)
    started = tmp_path / "started"
    workers = psutil.Process(process.pid).children()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    psutil.wait_procs(workers, timeout=10)

    begun = sorted(int(p.name) for p in started.iterdir())
    assert _done_jobs(tmp_path) == len(begun), stderr.decode()
    assert begun == list(range(len(begun)))


def test_second_interrupt_stops_jobs_and_checkpoints(tmp_path: Path) -> None:
    # Jobs 20 and up hang, and the first Ctrl-C would wait two minutes for
    # them. The second stops them at once, and the last checkpoint still
    # records jobs 0 to 19, so the rerun does only the rest.
    process = _start_marking("tests.stuck_run", tmp_path, jobs_started=22)
    workers = psutil.Process(process.pid).children()
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    gone, alive = psutil.wait_procs(workers, timeout=10)

    assert alive == []
    assert process.returncode == -signal.SIGINT, stderr.decode()
    assert "interrupted again" in stderr.decode()
    assert _done_jobs(tmp_path) == 20

    rerun = subprocess.run(
        [sys.executable, "-m", "tests.stuck_run", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        env={**os.environ, "SYNCAGG_TEST_FAST": "1"},
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr.decode()
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["x"] for line in lines) == list(range(40))
