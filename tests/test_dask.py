"""Runs on a real Dask LocalCluster, compared with the same jobs run by local workers.

One cluster of two worker processes with one thread each, bound to
127.0.0.1, serves the whole module from a process of its own
(``tests/dask_cluster.py``). Its scheduler fails a task at the first lost
worker (``allowed_failures=0``), so syncagg's ``retries`` alone decide how
often a job runs, as docs/dask.md describes.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import distributed
import psutil
import pyarrow.parquet as pq
import pytest

import syncagg as sa
from tests import dask_resumable_run, jobs
from tests.checkpoints import done_jobs
from tests.conftest import Lasting

ROOT = Path(__file__).resolve().parent.parent
COUNT = 300
EXPECTED_VALUE = sum(x * x for x in range(COUNT) if x % 7 != 0)
EXPECTED_FAILED = list(range(0, COUNT, 7))
RESUME_COUNT = 600


def _cluster_pids(process: subprocess.Popen[str]) -> set[int]:
    """Return the pids of the cluster's process and of every process under it, such as its workers."""
    try:
        root = psutil.Process(process.pid)
        return {process.pid} | {child.pid for child in root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _network_sockets() -> set[int]:
    """Return this process's descriptors of sockets other than Unix sockets.

    They are the cluster's connections, because syncagg opens no network
    sockets. Counting by kind, not by address, also covers a socket that
    Dask has created but not yet connected.
    """
    with open("/proc/net/unix") as table:
        next(table)
        unix_inodes = {line.split()[6] for line in table}
    sockets = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # closed since the listing, such as the listing's own descriptor
        if target.startswith("socket:[") and target[8:-1] not in unix_inodes:
            sockets.add(int(name))
    return sockets


def _local_cluster(workers: int) -> distributed.LocalCluster:
    """Start a LocalCluster on 127.0.0.1 whose scheduler fails a task at its first lost worker."""
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # A free port for the scheduler's HTTP server: with no dashboard,
        # Dask still serves it, by default on port 8787.
        scheduler_kwargs={"allowed_failures": 0, "dashboard_address": "127.0.0.1:0"},
    )


@pytest.fixture(scope="module")
def scheduler_address(lasting: list[Lasting]) -> Iterator[str]:
    """Start the module's cluster in a process of its own and return its scheduler's address."""
    command = [sys.executable, "-m", "tests.dask_cluster"]
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None
    assert process.stdout is not None
    registered = Lasting(pids=functools.partial(_cluster_pids, process), descriptors=_network_sockets)
    lasting.append(registered)
    try:
        address = process.stdout.readline().strip()
        assert address.startswith("tcp://127.0.0.1:"), f"tests.dask_cluster printed {address!r}, not a scheduler address"
        yield address
    finally:
        lasting.remove(registered)
        process.stdin.close()  # the cluster process closes the cluster at end of input
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


@pytest.fixture(scope="module")
def client(scheduler_address: str) -> Iterator[distributed.Client]:
    with distributed.Client(scheduler_address) as client:
        yield client


@pytest.fixture(autouse=True)
def _whole_cluster(request: pytest.FixtureRequest) -> None:
    """Wait until both workers run, because an earlier test may have killed one."""
    if "client" in request.fixturenames:
        request.getfixturevalue("client").wait_for_workers(2, timeout=90)


def _run(out: Path, fn: Callable[[Any], Any], **settings: Any) -> sa.RunSummary:
    out.mkdir()
    aggregator = sa.Aggregator(
        strategy=sa.Reduce(jobs.add_square, 0),
        outputs=[out / "rows.jsonl", out / "rows.parquet"],
        progress=False,
        **settings,
    )
    return aggregator.run(fn, range(COUNT))


def _jsonl_xs(path: Path) -> list[int]:
    return sorted(json.loads(line)["x"] for line in path.read_text().splitlines())


def _parquet_rows(path: Path) -> list[tuple[int, int]]:
    table = pq.read_table(path)
    return sorted(zip(table.column("x").to_pylist(), table.column("square").to_pylist(), strict=True))


def test_client_matches_local(tmp_path: Path, client: distributed.Client) -> None:
    on_dask = _run(tmp_path / "dask", jobs.fail_on_multiples_of_seven, executor=client)
    local = _run(tmp_path / "local", jobs.fail_on_multiples_of_seven, workers=2)

    assert on_dask.value == EXPECTED_VALUE
    assert local.value == EXPECTED_VALUE
    assert on_dask.counts == local.counts
    assert sorted(f.job_id for f in on_dask.failures) == EXPECTED_FAILED
    assert {f.error.type for f in on_dask.failures if f.error} == {"ValueError"}
    expected_xs = [x for x in range(COUNT) if x % 7 != 0]
    assert _jsonl_xs(tmp_path / "dask" / "rows.jsonl") == expected_xs
    assert _jsonl_xs(tmp_path / "local" / "rows.jsonl") == expected_xs
    assert _parquet_rows(tmp_path / "dask" / "rows.parquet") == [(x, x * x) for x in expected_xs]
    assert _parquet_rows(tmp_path / "local" / "rows.parquet") == [(x, x * x) for x in expected_xs]


def test_get_executor_matches_local(client: distributed.Client) -> None:
    expected = [jobs.square(x) for x in range(COUNT)]
    executor = client.get_executor()
    on_dask = sa.Aggregator(strategy=sa.Collect(ordered=True), executor=executor, progress=False)
    local = sa.Aggregator(strategy=sa.Collect(ordered=True), workers=2, progress=False)

    assert on_dask.run(jobs.square, range(COUNT)).value == expected
    assert local.run(jobs.square, range(COUNT)).value == expected


def test_get_executor_options(client: distributed.Client) -> None:
    address, pid = next(iter(client.run(os.getpid).items()))
    executor = client.get_executor(workers=[address])
    aggregator = sa.Aggregator(strategy=sa.Collect(), executor=executor, progress=False)

    assert set(aggregator.run(jobs.worker_pid, range(50)).value) == {pid}


@pytest.mark.parametrize("in_workers", [True, False], ids=["workers", "collector"])
def test_combine_folds_where_asked(client: distributed.Client, in_workers: bool) -> None:
    strategy = sa.Combine(jobs.SquareSumAndPids(), in_workers=in_workers)
    aggregator = sa.Aggregator(strategy=strategy, executor=client, progress=False)
    summary = aggregator.run(jobs.fail_on_multiples_of_seven, range(COUNT))
    total, pids = summary.value

    assert total == EXPECTED_VALUE
    assert summary.counts["ok"] == COUNT - len(EXPECTED_FAILED)
    assert summary.counts["failed"] == len(EXPECTED_FAILED)
    if in_workers:
        assert pids <= set(client.run(os.getpid).values())
        assert os.getpid() not in pids
    else:
        assert pids == {os.getpid()}


def test_default_workers(client: distributed.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # Sixteen local CPUs, so a default taken from this machine would show.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))

    assert sa.Aggregator(progress=False).workers == 16
    assert sa.Aggregator(executor=client, progress=False).workers == 2
    assert sa.Aggregator(executor=client.get_executor(), progress=False).workers == 2
    assert sa.Aggregator(executor=client, workers=3, progress=False).workers == 3


def test_empty_cluster_rejected() -> None:
    with (
        _local_cluster(0) as empty,
        distributed.Client(empty) as client,
        pytest.raises(ValueError, match=r"has no workers, so the default workers= would be 0"),
    ):
        sa.Aggregator(executor=client)


def test_in_flight_bounded(client: distributed.Client) -> None:
    read = 0
    collected = 0
    in_flight: list[int] = []

    def inputs() -> Iterator[int]:
        nonlocal read
        for x in range(COUNT):
            read += 1
            in_flight.append(read - collected)
            yield x

    def consume(result: sa.JobResult) -> None:
        nonlocal collected
        collected += 1

    # Two workers with one thread each: four chunks of one job at a time.
    aggregator = sa.Aggregator(strategy=sa.Stream(consume), executor=client, chunksize=1, progress=False)
    summary = aggregator.run(jobs.square, inputs())

    assert summary.counts["ok"] == COUNT
    assert collected == COUNT
    assert max(in_flight) == 4




def test_resume_after_kill(tmp_path: Path, client: distributed.Client) -> None:
    command = [sys.executable, "-m", "tests.dask_resumable_run", str(tmp_path), str(RESUME_COUNT)]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while done_jobs(tmp_path / "run.sqlite") < 100:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "the run recorded no checkpoint of 100 jobs within 60 s"
        time.sleep(0.02)

    cluster_processes = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    if process.stderr:
        process.stderr.close()
    # The LocalCluster's workers exit when their parent is gone.
    _, alive = psutil.wait_procs(cluster_processes, timeout=30)
    assert alive == []

    summary = dask_resumable_run.aggregator(tmp_path, client).run(jobs.sleepy_square, range(RESUME_COUNT))

    assert 100 <= summary.counts["resumed"] < RESUME_COUNT
    assert summary.value == sum(x * x for x in range(RESUME_COUNT))
    assert _jsonl_xs(tmp_path / "rows.jsonl") == list(range(RESUME_COUNT))
    assert _parquet_rows(tmp_path / "rows.parquet") == [(x, x * x) for x in range(RESUME_COUNT)]


# Each lost worker waits for its nanny to start a new one, which takes far
# longer than usual on a loaded machine.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("retries", [0, 1])
def test_killer_job_fails_alone(tmp_path: Path, client: distributed.Client, retries: int) -> None:
    # Chunks of four jobs: two splits find job 13, so few workers die and
    # the nannies' restarts stay quick on a loaded machine.
    on_dask = _run(tmp_path / "dask", jobs.kill_self_on_13, executor=client, retries=retries, chunksize=4)
    local = _run(tmp_path / "local", jobs.kill_self_on_13, workers=2, retries=retries)

    for summary in (on_dask, local):
        assert summary.value == sum(x * x for x in range(COUNT) if x != 13)
        assert summary.counts["failed"] == 1
        assert [f.job_id for f in summary.failures] == [13]
        failure = summary.failures[0]
        assert failure.error is not None
        assert failure.error.type == "syncagg.WorkerDied"
        assert failure.attempts == retries + 1
    expected_xs = [x for x in range(COUNT) if x != 13]
    assert _jsonl_xs(tmp_path / "dask" / "rows.jsonl") == expected_xs
    assert _parquet_rows(tmp_path / "dask" / "rows.parquet") == [(x, x * x) for x in expected_xs]


def test_task_error_charges_its_jobs(client: distributed.Client) -> None:
    # One job per chunk, so the task that raises contains job 5 alone.
    aggregator = sa.Aggregator(strategy=sa.Collect(), executor=client, chunksize=1, retries=1, progress=False)
    summary = aggregator.run(jobs.escape_on_5, range(20))

    assert summary.counts["ok"] == 19
    assert [f.job_id for f in summary.failures] == [5]
    failure = summary.failures[0]
    assert failure.error is not None
    assert failure.error.type == "syncagg.WorkerDied"
    assert "raised EscapingError: 5 escapes run_chunk" in failure.error.message
    assert failure.attempts == 2


@pytest.mark.timeout(300)
def test_lost_worker_retried(tmp_path: Path, client: distributed.Client) -> None:
    victim = next(iter(client.run(os.getpid).values()))
    collected = 0

    def kill_after_50(result: sa.JobResult) -> None:
        nonlocal collected
        collected += 1
        if collected == 50:
            os.kill(victim, signal.SIGKILL)

    aggregator = sa.Aggregator(
        strategy=sa.Stream(kill_after_50), outputs=[tmp_path / "rows.jsonl"], executor=client, progress=False
    )
    summary = aggregator.run(jobs.sleepy_square, range(COUNT))

    assert summary.counts["ok"] == COUNT
    assert summary.counts["failed"] == 0
    assert _jsonl_xs(tmp_path / "rows.jsonl") == list(range(COUNT))
    assert victim not in client.run(os.getpid).values()


def test_core_imports_no_dask() -> None:
    code = (
        "import json, sys\n"
        "import syncagg as sa\n"
        "from tests import jobs\n"
        "summary = sa.Aggregator(strategy=sa.Reduce(jobs.add_square, 0), workers=2, progress=False)"
        ".run(jobs.square, range(50))\n"
        "modules = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "print(json.dumps({'value': summary.value, 'modules': modules}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)

    assert report["value"] == sum(x * x for x in range(50))
    assert "distributed" not in report["modules"]
    assert "dask" not in report["modules"]
    assert report["modules"] == []


def _example_tree(root: Path) -> dict[str, dict[str, int]]:
    """Write a small tree for the example and return the totals it should report."""
    (root / "pkg").mkdir(parents=True)
    for i in range(12):
        (root / "pkg" / f"m{i}.py").write_text("x = 1\n" * (i + 1))
    (root / "notes.txt").write_text("one\ntwo\n")
    return {
        ".py": {"files": 12, "bytes": 6 * sum(range(1, 13)), "lines": sum(range(1, 13))},
        ".txt": {"files": 1, "bytes": 8, "lines": 2},
    }


@pytest.mark.parametrize("on_module_cluster", [True, False], ids=["scheduler", "local-cluster"])
def test_example_scan(tmp_path: Path, scheduler_address: str, on_module_cluster: bool) -> None:
    expected = _example_tree(tmp_path / "src")
    out = tmp_path / "out"
    command = [sys.executable, "examples/dask_scan.py", str(out), "--root", str(tmp_path / "src"), "--no-progress"]
    if on_module_cluster:
        command += ["--scheduler", scheduler_address]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads((out / "summary.json").read_text())

    assert summary["counts"] == {"ok": 13, "failed": 0}
    assert summary["suffixes"] == expected
    assert pq.read_table(out / "files.parquet").num_rows == 13
    assert len((out / "files.jsonl").read_text().splitlines()) == 13
