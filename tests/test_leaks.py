"""Shared-memory segments: none left after a run, owner-only mode, and the purge of dead runs."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from pathlib import Path

import psutil
import pytest

import syncagg as sa
from syncagg import segments
from syncagg.segments import SHM_DIR, create_segment, purge_stale_segments
from tests import jobs

_MiB = 1024 * 1024


def _own_segments() -> list[str]:
    """Return the names of the segments that runs of this process own."""
    prefix = f"syncagg-{os.getpid()}-"
    return sorted(name for name in os.listdir(SHM_DIR) if name.startswith(prefix))


def _dead_pid() -> int:
    """Return the pid of a process that has exited and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    assert not psutil.pid_exists(process.pid)
    return process.pid


def _fail_on_row(total: int, row: dict[str, int]) -> int:
    raise KeyError(f"no column for {row['x']}")


def test_normal_run_leaves_no_segment() -> None:
    seen_during_run: list[list[str]] = []

    def record(result: sa.JobResult) -> None:
        if not seen_during_run:
            seen_during_run.append(_own_segments())

    assert _own_segments() == []
    aggregator = sa.Aggregator(strategy=sa.Stream(record), workers=2, progress=False)
    summary = aggregator.run(jobs.square, range(200))

    assert summary.counts["ok"] == 200
    assert len(seen_during_run) == 1
    assert [name.endswith("-ring") for name in seen_during_run[0]] == [True]
    assert _own_segments() == []


def test_failing_function_leaves_no_segment() -> None:
    aggregator = sa.Aggregator(workers=2, progress=False)

    summary = aggregator.run(jobs.always_fail, range(50))

    assert summary.counts["ok"] == 0
    assert summary.counts["failed"] == 50
    assert summary.value == []
    assert _own_segments() == []


def test_strategy_error_leaves_no_segment() -> None:
    aggregator = sa.Aggregator(strategy=sa.Reduce(_fail_on_row, 0), workers=2, progress=False)

    with pytest.raises(sa.StrategyError, match="raised KeyError") as caught:
        aggregator.run(jobs.square, range(200))

    assert isinstance(caught.value.__cause__, KeyError)
    assert _own_segments() == []


def test_oversized_results_leave_no_segment() -> None:
    # Each worker's region is 1 MiB, so every 1.5 MB result travels in a
    # one-off segment that the parent unlinks after reading it.
    sizes = [1_500_000 + i for i in range(8)]
    aggregator = sa.Aggregator(
        strategy=sa.Collect(ordered=True),
        workers=2,
        progress=False,
        ring_size=2 * _MiB,
    )

    summary = aggregator.run(jobs.big_bytes, sizes)

    assert summary.counts["ok"] == 8
    assert [len(value) for value in summary.value] == sizes
    assert summary.value == [jobs.big_bytes(size) for size in sizes]
    assert _own_segments() == []


def test_ring_segment_mode_0600() -> None:
    modes: list[tuple[str, int, int]] = []

    def record(result: sa.JobResult) -> None:
        if modes:
            return
        for name in _own_segments():
            info = os.stat(Path(SHM_DIR, name))
            modes.append((name, stat.S_IMODE(info.st_mode), info.st_uid))

    aggregator = sa.Aggregator(strategy=sa.Stream(record), workers=2, progress=False)
    aggregator.run(jobs.square, range(50))

    assert len(modes) == 1
    name, mode, owner = modes[0]
    assert name.endswith("-ring")
    assert mode == 0o600
    assert owner == os.getuid()


def test_create_segment_ignores_umask() -> None:
    name = f"syncagg-{os.getpid()}-0badf00d-umask"
    previous = os.umask(0)
    try:
        segment = create_segment(name, 64)
    finally:
        os.umask(previous)

    try:
        mode = stat.S_IMODE(os.stat(Path(SHM_DIR, name)).st_mode)
    finally:
        segment.close()
        segment.unlink()
    assert mode == 0o600


def test_purge_keeps_live_owner_segment() -> None:
    dead_name = f"syncagg-{_dead_pid()}-deadbeef-ring"
    live_name = f"syncagg-{os.getpid()}-deadbeef-ring"
    dead = create_segment(dead_name, 64)
    dead.close()
    live = create_segment(live_name, 64)

    try:
        removed = purge_stale_segments()
        dead_exists = Path(SHM_DIR, dead_name).exists()
        live_exists = Path(SHM_DIR, live_name).exists()
    finally:
        live.close()
        live.unlink()
        if Path(SHM_DIR, dead_name).exists():
            dead.unlink()

    # Every run purges at its start, so a run of another test process may
    # remove the dead segment first; the checks hold either way.
    assert live_name not in removed
    assert not dead_exists
    assert live_exists


def test_purge_removes_empty_segment() -> None:
    # What a process killed between shm_open and ftruncate leaves behind.
    name = f"syncagg-{_dead_pid()}-deadbeef-w1-0"
    path = Path(SHM_DIR, name)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))

    try:
        purge_stale_segments()
        exists = path.exists()
    finally:
        path.unlink(missing_ok=True)

    assert not exists


def test_purge_skips_segment_it_may_not_unlink(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Root may unlink any file, so another user's segment is stood in for by
    # an unlink that raises what a non-root user gets.
    dead = _dead_pid()
    foreign_name = f"syncagg-{dead}-0000f00d-ring"
    stale_name = f"syncagg-{dead}-deadbeef-ring"
    for name in (foreign_name, stale_name):
        create_segment(name, 64).close()
    real_unlink = segments.unlink_segment

    def unlink(name: str) -> bool:
        if name == foreign_name:
            raise PermissionError(13, "Permission denied", name)
        return real_unlink(name)

    monkeypatch.setattr(segments, "unlink_segment", unlink)
    caplog.set_level(logging.DEBUG, logger="syncagg.segments")
    try:
        removed = purge_stale_segments()
        foreign_exists = Path(SHM_DIR, foreign_name).exists()
        stale_exists = Path(SHM_DIR, stale_name).exists()
    finally:
        real_unlink(foreign_name)
        real_unlink(stale_name)

    skipped = [record for record in caplog.records if foreign_name in record.getMessage()]
    assert foreign_name not in removed
    assert foreign_exists
    # Another test process may purge the stale segment first; it is gone either way.
    assert not stale_exists
    assert len(skipped) == 1
    assert skipped[0].levelno == logging.DEBUG
    assert "Permission denied" in skipped[0].getMessage()
