"""Checkpoint files, their errors, resuming a finished run, and JobRanges."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlitedict
from hypothesis import given, settings
from hypothesis import strategies as st

import syncagg as sa
from syncagg.checkpoint import Checkpoint, CheckpointState
from syncagg.jobranges import JobRanges
from syncagg.records import JobError, JobResult, Status
from tests import jobs

FINGERPRINT = {
    "function": "tests.jobs.square",
    "strategy": "Collect(ordered=False)",
    "outputs": [],
}


def saved_checkpoint(path: Path, state: CheckpointState | None = None) -> None:
    checkpoint = Checkpoint(path, FINGERPRINT)
    try:
        checkpoint.save(state if state is not None else CheckpointState())
    finally:
        checkpoint.close()


def load(
    path: Path, fingerprint: dict[str, Any] = FINGERPRINT
) -> CheckpointState | None:
    checkpoint = Checkpoint(path, fingerprint)
    try:
        return checkpoint.load()
    finally:
        checkpoint.close()


def names_file(path: Path) -> str:
    return re.escape(repr(str(path)))


# Files -------------------------------------------------------------------


def test_checkpoint_file_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    previous = os.umask(0)
    try:
        checkpoint = Checkpoint(path, FINGERPRINT)
    finally:
        os.umask(previous)
    try:
        checkpoint.save(CheckpointState())

        assert path.stat().st_mode & 0o777 == 0o600
        assert Path(f"{path}-wal").stat().st_mode & 0o777 == 0o600
    finally:
        checkpoint.close()


def test_checkpoint_new_file_loads_none(tmp_path: Path) -> None:
    assert load(tmp_path / "run.ckpt") is None


def test_checkpoint_text_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)

    with pytest.raises(
        sa.CheckpointError, match=names_file(path) + " is not a readable checkpoint"
    ):
        Checkpoint(path, FINGERPRINT)


def test_checkpoint_truncated_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    saved_checkpoint(path, CheckpointState(strategy=list(range(100_000))))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(sa.CheckpointError, match=names_file(path)):
        load(path)


@pytest.mark.timeout(30, method="thread")
def test_checkpoint_corrupt_page_raises(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    saved_checkpoint(path, CheckpointState(strategy=list(range(100_000))))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16 * 4096] = b"\x5a" * (16 * 4096)
    path.write_bytes(bytes(data))

    with pytest.raises(
        sa.CheckpointError, match=names_file(path) + ".*delete it to start afresh"
    ):
        load(path)


def test_checkpoint_foreign_database_raises(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    database = sqlite3.connect(path)
    database.execute("CREATE TABLE results (id INTEGER, value TEXT)")
    database.commit()
    database.close()

    with pytest.raises(
        sa.CheckpointError, match=names_file(path) + ".*no table 'syncagg'"
    ):
        Checkpoint(path, FINGERPRINT)


def test_checkpoint_missing_folder_raises(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "run.ckpt"

    with pytest.raises(sa.CheckpointError, match=names_file(path) + ".*does not exist"):
        Checkpoint(path, FINGERPRINT)


def test_checkpoint_in_use_raises(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    first = Checkpoint(path, FINGERPRINT)
    try:
        with pytest.raises(sa.CheckpointError, match=names_file(path) + " is in use"):
            Checkpoint(path, FINGERPRINT)
    finally:
        first.close()


_ORPHAN_SCRIPT = """
import os, sys, time
from syncagg.checkpoint import Checkpoint
checkpoint = Checkpoint(sys.argv[1], "fingerprint")
if os.fork() == 0:
    # Fork hooks have run by now: the child reports only after them.
    print(os.getpid(), flush=True)
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def test_forked_child_keeps_no_lock(tmp_path: Path) -> None:
    # A worker forked while the checkpoint is open outlives its killed
    # parent; the next run must still open the checkpoint at once.
    path = tmp_path / "run.ckpt"
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    orphan = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait(timeout=10)
        assert psutil.pid_exists(orphan)

        checkpoint = Checkpoint(path, "fingerprint")
        checkpoint.close()
    finally:
        parent.stdout.close()
        os.kill(orphan, signal.SIGKILL)


def test_checkpoint_close_twice(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "run.ckpt", FINGERPRINT)
    checkpoint.close()
    checkpoint.close()

    assert load(tmp_path / "run.ckpt") is None


def test_checkpoint_path_with_question_mark(tmp_path: Path) -> None:
    path = tmp_path / "run?#1.ckpt"
    saved_checkpoint(path, CheckpointState(status="finished"))

    state = load(path)

    assert state is not None
    assert state.status == "finished"


# Fingerprint and state ---------------------------------------------------


def test_checkpoint_other_fingerprint_raises(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    saved_checkpoint(path)
    other = {**FINGERPRINT, "function": "tests.jobs.sleepy_square"}

    with pytest.raises(sa.CheckpointMismatchError) as error:
        load(path, other)

    message = str(error.value)
    assert str(path) in message
    assert (
        "function: checkpoint has 'tests.jobs.square', this run has 'tests.jobs.sleepy_square'"
        in message
    )
    assert "strategy" not in message
    assert "outputs" not in message


def test_checkpoint_added_setting_raises(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    saved_checkpoint(path)

    with pytest.raises(
        sa.CheckpointMismatchError, match="retries: checkpoint has None, this run has 2"
    ):
        load(path, {**FINGERPRINT, "retries": 2})


def test_checkpoint_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    done = JobRanges()
    done.update([0, 1, 2, 3, 7, 8, 20])
    failure = JobResult(
        job_id=7,
        key="7",
        status=Status.FAILED,
        value=None,
        error=JobError("ValueError", "7 is a multiple of 7", "Traceback ..."),
        worker_pid=1234,
        started=10.5,
        finished=11.25,
        attempts=2,
    )
    state = CheckpointState(
        status="running",
        done=done,
        strategy={"total": 14},
        outputs={
            str(tmp_path / "rows.jsonl"): 120,
            str(tmp_path / "rows.csv"): {"offset": 40, "columns": ["x"]},
        },
        counts={"ok": 6, "failed": 1},
        failures=[failure],
    )
    saved_checkpoint(path, state)

    loaded = load(path)

    assert loaded is not None
    assert loaded.status == "running"
    assert loaded.done.to_ranges() == [(0, 4), (7, 9), (20, 21)]
    assert len(loaded.done) == 7
    assert loaded.strategy == {"total": 14}
    assert loaded.outputs == state.outputs
    assert loaded.counts == {"ok": 6, "failed": 1}
    assert loaded.failures == [failure]
    assert loaded.updated == state.updated
    assert loaded.updated > 0


def test_checkpoint_save_replaces_state(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    checkpoint = Checkpoint(path, FINGERPRINT)
    try:
        checkpoint.save(CheckpointState(status="running", counts={"ok": 1}))
        checkpoint.save(CheckpointState(status="finished", counts={"ok": 2}))
    finally:
        checkpoint.close()

    loaded = load(path)

    assert loaded is not None
    assert loaded.status == "finished"
    assert loaded.counts == {"ok": 2}


# Through Aggregator ------------------------------------------------------


def test_finished_run_not_repeated(tmp_path: Path) -> None:
    markers = tmp_path / "started"
    markers.mkdir()
    inputs = [(str(markers), x) for x in range(40)]

    def aggregator() -> sa.Aggregator:
        return sa.Aggregator(
            strategy=sa.Reduce(jobs.add_square, 0),
            outputs=[tmp_path / "rows.jsonl"],
            checkpoint=tmp_path / "run.ckpt",
            workers=2,
            progress=False,
        )

    first = aggregator().run(jobs.touch_and_square, inputs)
    assert len(os.listdir(markers)) == 40
    for marker in markers.iterdir():
        marker.unlink()
    rows = (tmp_path / "rows.jsonl").read_bytes()

    second = aggregator().run(jobs.touch_and_square, inputs)

    assert os.listdir(markers) == []
    assert second.value == sum(x * x for x in range(40))
    assert second.value == first.value
    assert second.counts["ok"] == first.counts["ok"] == 40
    assert second.counts["failed"] == first.counts["failed"] == 0
    assert second.counts["resumed"] == 40
    assert first.counts["resumed"] == 0
    assert (tmp_path / "rows.jsonl").read_bytes() == rows


def test_aggregator_other_strategy_raises(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.ckpt"
    sa.Aggregator(checkpoint=checkpoint, workers=2, progress=False).run(
        jobs.square, range(20)
    )
    other = sa.Aggregator(
        strategy=sa.Reduce(jobs.add_square, 0),
        checkpoint=checkpoint,
        workers=2,
        progress=False,
    )

    with pytest.raises(
        sa.CheckpointMismatchError,
        match=r"strategy: checkpoint has 'Collect\(ordered=False\)'",
    ):
        other.run(jobs.square, range(20))


def test_aggregator_text_checkpoint_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n")
    aggregator = sa.Aggregator(checkpoint=path, workers=2, progress=False)

    with pytest.raises(sa.CheckpointError, match=names_file(path)):
        aggregator.run(jobs.square, range(20))

    assert path.read_text() == "not a database\n"


# JobRanges ---------------------------------------------------------------


def runs_of(ids: set[int]) -> list[tuple[int, int]]:
    """Return sorted ids as half-open ranges of consecutive ids."""
    ranges: list[tuple[int, int]] = []
    for job_id in sorted(ids):
        if ranges and ranges[-1][1] == job_id:
            ranges[-1] = (ranges[-1][0], job_id + 1)
        else:
            ranges.append((job_id, job_id + 1))
    return ranges


ids = st.integers(min_value=0, max_value=300)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), ids),
        st.tuples(st.just("update"), st.lists(ids, max_size=30)),
        st.tuples(st.just("range"), ids, ids),
    ),
    max_size=40,
)


def apply(operations: list[tuple[Any, ...]]) -> tuple[JobRanges, set[int]]:
    done = JobRanges()
    expected: set[int] = set()
    for operation in operations:
        if operation[0] == "add":
            done.add(operation[1])
            expected.add(operation[1])
        elif operation[0] == "update":
            done.update(operation[1])
            expected.update(operation[1])
        else:
            done.add_range(operation[1], operation[2])
            expected.update(range(operation[1], operation[2]))
    return done, expected


@settings(deadline=None)
@given(operations)
def test_jobranges_match_python_set(operations: list[tuple[Any, ...]]) -> None:
    done, expected = apply(operations)

    assert len(done) == len(expected)
    assert done.to_ranges() == runs_of(expected)
    assert [i for i in range(-2, 305) if i in done] == sorted(expected)
    assert done.end == (max(expected) + 1 if expected else 0)


@settings(deadline=None)
@given(operations)
def test_jobranges_from_ranges_round_trip(operations: list[tuple[Any, ...]]) -> None:
    done, expected = apply(operations)

    copy = JobRanges.from_ranges(done.to_ranges())

    assert copy.to_ranges() == done.to_ranges()
    assert len(copy) == len(expected)


@settings(deadline=None)
@given(st.lists(ids, max_size=60), st.randoms(use_true_random=False))
def test_jobranges_order_does_not_matter(
    job_ids: list[int], shuffler: random.Random
) -> None:
    shuffled = list(job_ids)
    shuffler.shuffle(shuffled)
    in_order = JobRanges()
    in_order.update(sorted(job_ids))
    out_of_order = JobRanges()
    for job_id in shuffled:
        out_of_order.add(job_id)

    assert out_of_order.to_ranges() == in_order.to_ranges()
    assert len(out_of_order) == len(set(job_ids))


def test_jobranges_rejects_non_int() -> None:
    done = JobRanges()
    done.add_range(0, 5)

    assert "1" not in done
    assert 1.5 not in done
    assert None not in done


def test_jobranges_ten_million_one_range() -> None:
    done = JobRanges()
    done.update(range(10_000_000))

    assert done.to_ranges() == [(0, 10_000_000)]
    assert len(done) == 10_000_000
    assert 9_999_999 in done
    assert 10_000_000 not in done


def test_jobranges_shuffled_chunks_one_range() -> None:
    chunks = [(start, start + 1000) for start in range(0, 10_000_000, 1000)]
    random.Random(0).shuffle(chunks)
    done = JobRanges()
    for start, stop in chunks:
        done.add_range(start, stop)

    assert done.to_ranges() == [(0, 10_000_000)]
    assert len(done) == 10_000_000


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("counts", {"ok": "6"}, "expected a dict of ints"),
        ("counts", [6], "expected a dict"),
        ("done", [(0, "four")], "expected a list of (start, stop) pairs of ints"),
        ("done", 7, "expected a list of (start, stop) pairs of ints"),
        ("failures", ["job 7 failed"], "expected a list of JobResult"),
        ("status", 3, "expected a str"),
        ("fingerprint", "x", "expected a dict"),
    ],
)
def test_hand_edited_value_raises(tmp_path: Path, key: str, value: Any, expected: str) -> None:
    path = tmp_path / "run.ckpt"
    saved_checkpoint(path, CheckpointState(counts={"ok": 6}))
    with sqlitedict.SqliteDict(str(path), tablename="syncagg", autocommit=True) as stored:
        stored[key] = value

    with pytest.raises(sa.CheckpointError, match=re.escape(expected)) as raised:
        load(path)

    assert f"has {key}=" in str(raised.value)
    assert "delete it to start afresh" in str(raised.value)


def test_strategy_state_that_does_not_fit_raises(tmp_path: Path) -> None:
    # An ordered Reduce restores a tuple of the accumulator and the values
    # that wait. A dict put in by hand fails, and the error names the file.
    path = tmp_path / "run.sqlite"
    sa.Aggregator(
        strategy=sa.Reduce(jobs.add_square, 0, ordered=True), checkpoint=path, workers=1, progress=False
    ).run(jobs.square, range(5))
    with sqlitedict.SqliteDict(str(path), tablename="syncagg", autocommit=True) as stored:
        stored["strategy"] = {"total": "not a number"}
        stored["status"] = "running"

    with pytest.raises(sa.CheckpointError, match="cannot restore"):
        sa.Aggregator(
            strategy=sa.Reduce(jobs.add_square, 0, ordered=True), checkpoint=path, workers=1, progress=False
        ).run(jobs.square, range(5))
