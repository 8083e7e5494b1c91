"""The syncagg command under Ctrl-C and SIGTERM, ``inspect`` on running and finished runs, and resume."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pyarrow.parquet as pq
import pytest

from tests.test_cli import ROOT, run_cli, run_cli_closed_stdout, stdout_json, write_jsonl

COUNT = 300
FAILED_IDS = list(range(0, COUNT, 7))
OK_IDS = [x for x in range(COUNT) if x % 7 != 0]


def run_command(folder: Path) -> list[str]:
    """Return the arguments of a run over COUNT slow jobs with a checkpoint every 0.2 s."""
    return [
        "run",
        "tests.cli_jobs:slow_square",
        str(folder / "in.jsonl"),
        "-w",
        "2",
        "-o",
        str(folder / "rows.jsonl"),
        "-s",
        "sum:x",
        "--checkpoint",
        str(folder / "run.sqlite"),
        "--checkpoint-seconds",
        "0.2",
    ]


def inspect_json(checkpoint: Path) -> dict[str, object]:
    result = run_cli("inspect", checkpoint, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def wait_for_done(
    process: subprocess.Popen[bytes], checkpoint: Path, at_least: int
) -> dict[str, object]:
    """Return the first ``inspect --json`` report with ``at_least`` jobs done, read while the run goes on."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, (
            "the run ended before the test could interrupt it"
        )
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        if checkpoint.exists() and checkpoint.stat().st_size > 0:
            report = inspect_json(checkpoint)
            if report["status"] != "empty" and int(report["done"]) >= at_least:  # type: ignore[call-overload]
                return report
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], signum: int) -> int:
    workers = psutil.Process(process.pid).children()
    process.send_signal(signum)
    code = process.wait(timeout=60)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []
    return code


def interrupt_run(folder: Path, signum: int) -> tuple[int, dict[str, object], str]:
    """Start a run, inspect it while it runs, stop it with ``signum``; return the code, report and stderr."""
    write_jsonl(folder / "in.jsonl", list(range(COUNT)))
    log = folder / "stderr.txt"
    command = [sys.executable, "-m", "syncagg", *run_command(folder)]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            report = wait_for_done(process, folder / "run.sqlite", 20)
            code = stop(process, signum)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return code, report, log.read_text()


def resume_and_check(folder: Path) -> None:
    result = run_cli(*run_command(folder))

    assert result.returncode == 0, result.stderr
    assert stdout_json(result) == sum(range(COUNT))
    rows = [
        json.loads(line)["x"]
        for line in (folder / "rows.jsonl").read_text().splitlines()
    ]
    assert sorted(rows) == list(range(COUNT))
    resumed = [
        line for line in result.stderr.splitlines() if line.startswith("resumed")
    ]
    assert len(resumed) == 1
    assert int(resumed[0].split()[1]) > 0


@pytest.mark.timeout(300)
def test_sigint_exits_130_then_resumes(tmp_path: Path) -> None:
    code, running, stderr = interrupt_run(tmp_path, signal.SIGINT)

    assert code == 130
    assert running["status"] == "running"
    assert running["total"] == COUNT
    assert "Traceback" not in stderr
    assert (
        f"interrupted by Ctrl-C; {tmp_path / 'run.sqlite'} contains the jobs done so far"
        in stderr
    )

    partial = inspect_json(tmp_path / "run.sqlite")
    assert partial["status"] == "running"
    assert int(partial["done"]) + int(partial["pending"]) == COUNT  # type: ignore[call-overload]
    assert int(partial["done"]) >= int(running["done"])  # type: ignore[call-overload]
    assert not (tmp_path / "rows.jsonl").exists()
    resume_and_check(tmp_path)


@pytest.mark.timeout(300)
def test_sigterm_exits_143_then_resumes(tmp_path: Path) -> None:
    code, _, stderr = interrupt_run(tmp_path, signal.SIGTERM)

    assert code == 143
    assert "Traceback" not in stderr
    assert "stopped by SIGTERM" in stderr
    assert inspect_json(tmp_path / "run.sqlite")["status"] == "running"
    resume_and_check(tmp_path)


@pytest.mark.timeout(300)
def test_inspect_partial_text(tmp_path: Path) -> None:
    code, _, _ = interrupt_run(tmp_path, signal.SIGINT)
    assert code == 130

    result = run_cli("inspect", tmp_path / "run.sqlite")

    assert result.returncode == 0, result.stderr
    fields = {line[:16].strip(): line[17:] for line in result.stdout.splitlines()}
    done = int(fields["jobs done"].split()[0])
    assert fields["status"] == "running"
    assert fields["function"] == "tests.cli_jobs.slow_square"
    assert fields["strategy"] == "sum:x"
    assert fields["inputs"] == f"{COUNT} rows of the input files"
    assert fields["jobs done"] == f"{done} ({done} ok, 0 failed)"
    assert fields["jobs pending"] == f"{COUNT - done} of {COUNT}"
    assert fields["outputs"].startswith(f"{tmp_path / 'rows.jsonl'} (jsonl): ")
    assert fields["outputs"].endswith(" bytes committed")
    assert fields["last checkpoint"].endswith(" s ago)")


def test_inspect_finished(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))
    checkpoint = tmp_path / "run.sqlite"
    output = tmp_path / "rows.parquet"
    result = run_cli(
        "run",
        "tests.cli_jobs:square_but_seven",
        inputs,
        "-w",
        "2",
        "-o",
        output,
        "--checkpoint",
        checkpoint,
    )
    assert result.returncode == 1, result.stderr

    text = run_cli("inspect", checkpoint)
    report = inspect_json(checkpoint)

    assert text.returncode == 0, text.stderr
    fields = {line[:16].strip(): line[17:] for line in text.stdout.splitlines()}
    assert fields["status"] == "finished"
    assert fields["jobs done"] == "10 (9 ok, 1 failed)"
    assert fields["jobs pending"] == "0 of 10"
    assert fields["inputs"] == "10 rows of the input files"
    assert fields["strategy"] == "count"
    assert fields["outputs"] == f"{output} (parquet): 9 rows committed"
    assert fields["failure"] == "job 7 (7): ValueError: 7 is not welcome"
    assert report["status"] == "finished"
    assert report["done"] == 10
    assert report["ok"] == 9
    assert report["failed"] == 1
    assert report["pending"] == 0
    assert report["function"] == "tests.cli_jobs.square_but_seven"
    assert report["strategy"] == "count"
    [described] = report["outputs"]  # type: ignore[misc]
    assert described["path"] == str(output)
    assert described["format"] == "parquet"
    # The position also carries the Parquet output's own converter state.
    assert described["position"]["parts"] == 1
    assert described["position"]["rows"] == 9
    assert report["failures"] == [
        {"job_id": 7, "key": "7", "error": "ValueError: 7 is not welcome"}
    ]


@pytest.mark.parametrize("strategy", ["collect", "mean:x", "group:parity:sum:square"])
def test_inspect_strategy_as_typed(tmp_path: Path, strategy: str) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(4)))
    checkpoint = tmp_path / "run.sqlite"
    run = run_cli(
        "run", "tests.cli_jobs:square", inputs, "-w", "1", "-s", strategy, "--checkpoint", checkpoint
    )
    assert run.returncode == 0, run.stderr

    text = run_cli("inspect", checkpoint)

    assert text.returncode == 0, text.stderr
    fields = {line[:16].strip(): line[17:] for line in text.stdout.splitlines()}
    assert fields["strategy"] == strategy
    assert inspect_json(checkpoint)["strategy"] == strategy


def test_inspect_closed_stdout_exit_141(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(4)))
    checkpoint = tmp_path / "run.sqlite"
    run = run_cli("run", "tests.cli_jobs:square", inputs, "-w", "1", "--checkpoint", checkpoint)
    assert run.returncode == 0, run.stderr

    text = run_cli_closed_stdout("inspect", checkpoint)
    report = run_cli_closed_stdout("inspect", checkpoint, "--json")

    assert text.returncode == 141
    assert text.stderr == ""
    assert report.returncode == 141
    assert report.stderr == ""


def test_rerun_of_finished_run_returns_at_once(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))
    arguments = [
        "run",
        "tests.cli_jobs:square",
        inputs,
        "-w",
        "2",
        "-s",
        "sum:x",
        "--checkpoint",
        tmp_path / "run.sqlite",
    ]
    first = run_cli(*arguments)

    second = run_cli(*arguments)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert stdout_json(second) == 45
    assert "resumed      10" in second.stderr.splitlines()


def test_changed_strategy_exit_two(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(4)))
    checkpoint = tmp_path / "run.sqlite"
    first = run_cli(
        "run",
        "tests.cli_jobs:square",
        inputs,
        "-w",
        "1",
        "-s",
        "sum:x",
        "--checkpoint",
        checkpoint,
    )

    second = run_cli(
        "run",
        "tests.cli_jobs:square",
        inputs,
        "-w",
        "1",
        "-s",
        "sum:square",
        "--checkpoint",
        checkpoint,
    )

    assert first.returncode == 0, first.stderr
    assert second.returncode == 2
    assert "Traceback" not in second.stderr
    assert "was written by a run with another configuration" in second.stderr
    assert "strategy: checkpoint has 'sum:x', this run has 'sum:square'" in second.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found; pass the path given to --checkpoint"),
        (
            b"not a database at all, just text that is long enough" * 4,
            "is not a syncagg checkpoint",
        ),
    ],
    ids=["missing", "not-sqlite"],
)
def test_inspect_bad_file_exit_two(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "run.sqlite"
    if content is not None:
        path.write_bytes(content)

    result = run_cli("inspect", path)

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def where_all_command(folder: Path) -> list[str]:
    """Return the arguments of a run that writes ok and failed rows to three formats."""
    return [
        "run",
        "tests.cli_jobs:slow_square_failing_on_sevens",
        str(folder / "in.jsonl"),
        "-w",
        "2",
        "--where",
        "all",
        "-o",
        str(folder / "rows.jsonl"),
        "-o",
        str(folder / "rows.csv"),
        "-o",
        str(folder / "rows.parquet"),
        "-s",
        "sum:x",
        "--checkpoint",
        str(folder / "run.sqlite"),
        "--checkpoint-seconds",
        "0.2",
        "--summary",
        str(folder / "summary.json"),
    ]


def expected_ok_row(x: int) -> dict[str, object]:
    return {"x": x, "square": x * x, "parity": "even" if x % 2 == 0 else "odd", "status": "ok"}


def expected_failed_row(x: int) -> dict[str, object]:
    return {
        "job_id": x,
        "key": str(x),
        "status": "failed",
        "error_type": "ValueError",
        "error_message": f"{x} is a multiple of 7",
    }


def check_jsonl_rows(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    ok = sorted((row for row in rows if row["status"] == "ok"), key=lambda row: row["x"])
    failed = sorted((row for row in rows if row["status"] == "failed"), key=lambda row: row["job_id"])
    assert len(rows) == COUNT
    assert ok == [expected_ok_row(x) for x in OK_IDS]
    assert failed == [expected_failed_row(x) for x in FAILED_IDS]


def check_csv_rows(path: Path) -> None:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    ok = [row for row in rows if row["status"] == "ok"]
    failed = [row for row in rows if row["status"] == "failed"]
    assert set(reader.fieldnames or ()) == {
        "x", "square", "parity", "status", "job_id", "key", "error_type", "error_message"
    }
    assert len(rows) == COUNT
    assert sorted(int(row["x"]) for row in ok) == OK_IDS
    assert {row["job_id"] for row in ok} == {""}
    assert sorted(int(row["job_id"]) for row in failed) == FAILED_IDS
    assert {row["x"] for row in failed} == {""}
    assert {row["error_type"] for row in failed} == {"ValueError"}


def check_parquet_rows(path: Path) -> None:
    rows = pq.read_table(path).to_pylist()
    ok = sorted((row for row in rows if row["status"] == "ok"), key=lambda row: row["x"])
    failed = sorted((row for row in rows if row["status"] == "failed"), key=lambda row: row["job_id"])
    empty_failed = {"job_id": None, "key": None, "error_type": None, "error_message": None}
    empty_ok = {"x": None, "square": None, "parity": None}
    assert len(rows) == COUNT
    assert ok == [{**expected_ok_row(x), **empty_failed} for x in OK_IDS]
    assert failed == [{**expected_failed_row(x), **empty_ok} for x in FAILED_IDS]


def check_with_duckdb(folder: Path) -> None:
    """Count each job once per status in every output, read by DuckDB."""
    readers = {"rows.jsonl": "read_json", "rows.csv": "read_csv", "rows.parquet": "read_parquet"}
    connection = duckdb.connect()
    try:
        for name, reader in readers.items():
            path = str(folder / name)
            counts = connection.execute(
                f"SELECT status, count(*), count(DISTINCT coalesce(x, job_id)) FROM {reader}(?) "
                "GROUP BY status ORDER BY status",
                [path],
            ).fetchall()
            failed = connection.execute(
                f"SELECT job_id, key::VARCHAR, error_message FROM {reader}(?) "
                "WHERE status = 'failed' ORDER BY job_id",
                [path],
            ).fetchall()
            assert counts == [
                ("failed", len(FAILED_IDS), len(FAILED_IDS)),
                ("ok", len(OK_IDS), len(OK_IDS)),
            ], name
            assert failed == [(x, str(x), f"{x} is a multiple of 7") for x in FAILED_IDS], name
    finally:
        connection.close()


@pytest.mark.timeout(300)
def test_where_all_exactly_once_after_sigkill(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", list(range(COUNT)))
    command = [sys.executable, "-m", "syncagg", *where_all_command(tmp_path)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        report = wait_for_done(process, tmp_path / "run.sqlite", 60)
        code = stop(process, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == -signal.SIGKILL
    assert int(report["failed"]) > 0  # type: ignore[call-overload]
    assert not (tmp_path / "rows.parquet").exists()

    result = run_cli(*where_all_command(tmp_path))

    assert result.returncode == 1, result.stderr
    assert stdout_json(result) == sum(OK_IDS)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"]["ok"] == len(OK_IDS)
    assert summary["counts"]["failed"] == len(FAILED_IDS)
    assert summary["counts"]["resumed"] >= 60
    check_jsonl_rows(tmp_path / "rows.jsonl")
    check_csv_rows(tmp_path / "rows.csv")
    check_parquet_rows(tmp_path / "rows.parquet")
    check_with_duckdb(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 128 + signal.SIGINT), (signal.SIGTERM, 128 + signal.SIGTERM)],
    ids=["sigint", "sigterm"],
)
def test_stop_while_stdin_is_quiet(tmp_path: Path, signum: int, code: int) -> None:
    # Twenty lines arrive, then standard input stays open and quiet. The
    # collector thread waits for the next line, and the stop must still end
    # the run with a last checkpoint of the twenty jobs.
    command = [
        sys.executable, "-m", "syncagg", "run", "tests.cli_jobs:square", "-", "-w", "2",
        "-o", str(tmp_path / "rows.jsonl"), "--checkpoint", str(tmp_path / "run.sqlite"),
        "--checkpoint-seconds", "0.1",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert process.stdin is not None
        process.stdin.write(b"".join(b"%d\n" % x for x in range(20)))
        process.stdin.flush()
        wait_for_done(process, tmp_path / "run.sqlite", 20)
        returned = stop(process, signum)
        stderr = process.stderr.read().decode() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdin is not None:
            process.stdin.close()
        if process.stderr is not None:
            process.stderr.close()

    assert returned == code, stderr
    assert inspect_json(tmp_path / "run.sqlite")["done"] == 20

    # The resume reads the same twenty lines and twenty more, and runs only the new ones.
    lines = b"".join(b"%d\n" % x for x in range(40))
    resumed = subprocess.run(command, cwd=ROOT, input=lines, capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()
    rows = [json.loads(line)["x"] for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert sorted(rows) == list(range(40))


def test_checkpoint_of_stdin_named_in_words(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.sqlite"
    command = [
        sys.executable, "-m", "syncagg", "run", "tests.cli_jobs:square", "-", "-w", "1",
        "--checkpoint", str(checkpoint),
    ]
    lines = b"".join(b"%d\n" % x for x in range(4))
    first = subprocess.run(command, cwd=ROOT, input=lines, capture_output=True, timeout=120)
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(4)))

    from_files = run_cli("run", "tests.cli_jobs:square", inputs, "-w", "1", "--checkpoint", checkpoint)
    inspected = run_cli("inspect", checkpoint)

    assert first.returncode == 0, first.stderr.decode()
    assert from_files.returncode == 2
    assert (
        "inputs: checkpoint has rows of standard input and the input files, "
        "this run has 4 rows of the input files" in from_files.stderr
    )
    fields = {line[:16].strip(): line[17:] for line in inspected.stdout.splitlines()}
    assert fields["inputs"] == "rows of standard input and the input files"
    assert fields["jobs pending"] == "0 of 4"
