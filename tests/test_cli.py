"""The syncagg command in real subprocesses: inputs, outputs, strategies, exit codes and errors."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent
SQUARE = "tests.cli_jobs:square"


def run_cli(
    *arguments: str | Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m syncagg`` from the repository root and return the finished process."""
    command = [sys.executable, "-m", "syncagg", *map(str, arguments)]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_cli_closed_stdout(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m syncagg`` with standard output a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        command = [sys.executable, "-m", "syncagg", *map(str, arguments)]
        return subprocess.run(
            command, cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE,
            text=True, timeout=120, check=False,
        )
    finally:
        os.close(write_end)


def write_jsonl(path: Path, values: list[object]) -> Path:
    path.write_text("".join(json.dumps(value) + "\n" for value in values))
    return path


def stdout_json(result: subprocess.CompletedProcess[str]) -> object:
    return json.loads(result.stdout)


def test_jsonl_input_counts(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))

    result = run_cli("run", SQUARE, inputs, "--workers", "2")

    assert result.returncode == 0, result.stderr
    assert stdout_json(result) == 10
    assert "Traceback" not in result.stderr


def test_csv_input_to_every_output(tmp_path: Path) -> None:
    inputs = tmp_path / "in.csv"
    inputs.write_text("x,name\n" + "".join(f"{i},n{i}\n" for i in range(6)))
    outputs = [
        tmp_path / "rows.jsonl",
        tmp_path / "rows.csv",
        tmp_path / "rows.parquet",
    ]

    result = run_cli(
        "run", SQUARE, inputs, "-w", "2", *[a for o in outputs for a in ("-o", o)]
    )

    assert result.returncode == 0, result.stderr
    expected = [
        {"x": i, "square": i * i, "parity": "even" if i % 2 == 0 else "odd"}
        for i in range(6)
    ]
    jsonl_rows = [json.loads(line) for line in outputs[0].read_text().splitlines()]
    assert sorted(jsonl_rows, key=lambda row: row["x"]) == expected
    with outputs[1].open(newline="") as file:
        csv_rows = list(csv.DictReader(file))
    assert sorted(int(row["square"]) for row in csv_rows) == [i * i for i in range(6)]
    parquet_rows = pq.read_table(outputs[2]).to_pylist()
    assert sorted(parquet_rows, key=lambda row: row["x"]) == expected


def test_parquet_input_sums(tmp_path: Path) -> None:
    inputs = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"x": list(range(20)), "label": [f"l{i}" for i in range(20)]}), inputs
    )

    result = run_cli("run", SQUARE, inputs, "-w", "2", "--strategy", "sum:square")

    assert result.returncode == 0, result.stderr
    assert stdout_json(result) == sum(i * i for i in range(20))


def test_text_input_collects_lines(tmp_path: Path) -> None:
    inputs = tmp_path / "in.txt"
    inputs.write_bytes(b"alpha\r\nbeta\n\ngamma")

    result = run_cli(
        "run", "tests.cli_jobs:echo", inputs, "-w", "2", "--strategy", "collect"
    )

    assert result.returncode == 0, result.stderr
    assert sorted(stdout_json(result)) == ["", "alpha", "beta", "gamma"]  # type: ignore[type-var]


def test_several_inputs_in_order(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", [1, 2])
    second = tmp_path / "b.txt"
    second.write_text("3\n4\n")
    output = tmp_path / "rows.jsonl"

    result = run_cli(
        "run", SQUARE, first, second, "-w", "1", "-o", output, "-s", "sum:x"
    )

    assert result.returncode == 0, result.stderr
    assert stdout_json(result) == 10
    assert len(output.read_text().splitlines()) == 4


def test_input_format_option(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "numbers.dat", [1, 2, 3])

    result = run_cli(
        "run", SQUARE, inputs, "-w", "1", "--input-format", "jsonl", "-s", "max:square"
    )

    assert result.returncode == 0, result.stderr
    assert stdout_json(result) == 9


def test_format_option_overrides_suffix(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [1, 2])
    output = tmp_path / "rows.out"

    result = run_cli("run", SQUARE, inputs, "-w", "1", "-o", output, "--format", "csv")

    assert result.returncode == 0, result.stderr
    assert output.read_text().splitlines()[0] == "x,square,parity"


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("count", 10),
        ("sum:square", 285),
        ("min:square", 0),
        ("max:x", 9),
        ("mean:x", 4.5),
        ("group:parity:count", {"even": 5, "odd": 5}),
        ("group:parity:sum:square", {"even": 120, "odd": 165}),
        ("group:parity:mean:x", {"even": 4.0, "odd": 5.0}),
    ],
)
def test_strategy_result(tmp_path: Path, strategy: str, expected: object) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))

    result = run_cli("run", SQUARE, inputs, "-w", "2", "--strategy", strategy)

    assert result.returncode == 0, result.stderr
    assert stdout_json(result) == expected


# In input order, a float sum rounds 1e16 + 1.0 back to 1e16 twice and ends
# with 0.0 for the group "a", while the exact sum is 2.0. With one worker the
# results arrive in input order, so an order-dependent sum fails every time.
ORDER_DEPENDENT = [
    {"g": "a", "v": 1e16},
    {"g": "a", "v": 1.0},
    {"g": "a", "v": 1.0},
    {"g": "a", "v": -1e16},
    {"g": "b", "v": 0.1},
    {"g": "b", "v": 0.2},
    {"g": "b", "v": 0.3},
]


def exact_mean(values: list[float]) -> float:
    return float(sum(map(Fraction, values)) / len(values))


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("sum:v", math.fsum(row["v"] for row in ORDER_DEPENDENT)),
        ("mean:v", exact_mean([row["v"] for row in ORDER_DEPENDENT])),
        ("group:g:sum:v", {"a": 2.0, "b": math.fsum([0.1, 0.2, 0.3])}),
        ("group:g:mean:v", {"a": 0.5, "b": exact_mean([0.1, 0.2, 0.3])}),
    ],
)
def test_float_strategy_exact(tmp_path: Path, strategy: str, expected: object) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", ORDER_DEPENDENT)

    result = run_cli("run", "tests.cli_jobs:echo", inputs, "-w", "1", "-s", strategy)

    assert result.returncode == 0, result.stderr
    assert stdout_json(result) == expected


def test_float_sum_same_every_run(tmp_path: Path) -> None:
    generator = random.Random(7)
    values = [generator.uniform(-1, 1) * 10 ** generator.randint(-8, 8) for _ in range(3000)]
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"v": value} for value in values])

    sums = [
        run_cli("run", "tests.cli_jobs:echo", inputs, "-w", "2", "-q", "-s", "sum:v")
        for _ in range(3)
    ]

    for result in sums:
        assert result.returncode == 0, result.stderr
        assert stdout_json(result) == math.fsum(values)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("sum:v", 4),
        ("mean:v", 2.0),
        ("min:v", 1),
        ("max:v", 3),
        ("group:g:sum:v", {"a": 1, "b": 3}),
        ("group:g:mean:v", {"a": 1.0, "b": 3.0}),
        ("group:g:count", {"a": 2, "b": 2}),
    ],
)
def test_strategy_skips_none(tmp_path: Path, strategy: str, expected: object) -> None:
    rows = [{"g": "a", "v": 1}, {"g": "a", "v": None}, {"g": "b", "v": None}, {"g": "b", "v": 3}]
    inputs = write_jsonl(tmp_path / "in.jsonl", rows)

    result = run_cli("run", "tests.cli_jobs:echo", inputs, "-w", "2", "-s", strategy)

    assert result.returncode == 0, result.stderr
    assert stdout_json(result) == expected


@pytest.mark.parametrize(
    ("strategy", "fix"),
    [
        ("sum", "name a field with --strategy sum:FIELD, such as --strategy sum:square"),
        ("max", "name a field with --strategy max:FIELD, such as --strategy max:square"),
        (
            "group:parity:mean",
            "--strategy group:parity:mean:FIELD, such as --strategy group:parity:mean:square",
        ),
    ],
)
def test_strategy_without_field_on_dicts(tmp_path: Path, strategy: str, fix: str) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [1, 2])

    result = run_cli("run", SQUARE, inputs, "-w", "1", "-s", strategy)

    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    [message] = [line for line in result.stderr.splitlines() if "error" in line]
    assert message.startswith(
        f"syncagg run: error: --strategy {strategy}: the results are dicts "
        "(fields: parity, square, x)"
    )
    assert fix in message
    assert "Reduce" not in message
    assert "Combine" not in message


def test_strategy_field_not_number(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [1])

    result = run_cli("run", SQUARE, inputs, "-w", "1", "-s", "sum:parity")

    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == (
        "syncagg run: error: --strategy sum:parity: field 'parity' is 'odd' of type str, "
        "not an int or a float; return numbers to sum"
    )


def test_collect_over_memory_budget(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))

    # The parent alone uses more than 1 MiB, so the first reading is over the budget.
    result = run_cli(
        "run", SQUARE, inputs, "-w", "1", "-s", "collect", "--max-memory", "1MiB"
    )

    assert result.returncode == 3
    message = result.stderr.splitlines()[-1]
    assert message.startswith("syncagg run: error: memory use ")
    assert "passed --max-memory 1.0 MiB (1048576 bytes)" in message
    assert "such as count, sum:FIELD or group:KEY:count" in message
    assert "--output PATH" in message
    assert "Reduce" not in message


def test_failed_jobs_exit_one(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))

    result = run_cli("run", "tests.cli_jobs:square_but_seven", inputs, "-w", "2")

    assert result.returncode == 1, result.stderr
    assert stdout_json(result) == 9
    table = result.stderr.splitlines()
    assert "ok           9" in table
    assert "failed       1" in table
    assert "resumed      0" in table
    assert "failure      job 7 (7): ValueError: 7 is not welcome" in table


def test_summary_file(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))
    summary = tmp_path / "summary.json"

    result = run_cli(
        "run",
        "tests.cli_jobs:square_but_seven",
        inputs,
        "-w",
        "2",
        "-s",
        "sum:x",
        "--summary",
        summary,
    )

    assert result.returncode == 1, result.stderr
    data = json.loads(summary.read_text())
    assert data["result"] == 45 - 7
    assert data["counts"] == {"ok": 9, "failed": 1, "resumed": 0}
    assert data["function"] == "tests.cli_jobs:square_but_seven"
    assert data["strategy"] == "sum:x"
    assert [f["job_id"] for f in data["failures"]] == [7]
    assert data["failures"][0]["error_message"] == "7 is not welcome"


def test_quiet_writes_no_table(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(5)))

    result = run_cli("run", SQUARE, inputs, "-w", "1", "--quiet")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert stdout_json(result) == 5


def test_progress_logs_without_terminal(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))

    result = run_cli("run", "tests.cli_jobs:square_but_seven", inputs, "-w", "2")

    progress = [
        line for line in result.stderr.splitlines() if "INFO syncagg: progress:" in line
    ]
    assert len(progress) >= 1
    assert "10/10 jobs done (100.0%), 1 failed" in progress[-1]
    assert "parent memory" in progress[-1]
    assert "\r" not in result.stderr


def test_failed_job_logged_as_warning(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))

    result = run_cli(
        "run", "tests.cli_jobs:square_but_seven", inputs, "-w", "2", "--quiet"
    )

    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "syncagg.collector" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith(
        "WARNING syncagg.collector: job 7 (7) failed: ValueError: 7 is not welcome"
    )


def test_where_failed_writes_failed_rows(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))
    output = tmp_path / "failed.jsonl"

    result = run_cli(
        "run", "tests.cli_jobs:square_but_seven", inputs, "-w", "2",
        "--where", "failed", "-o", output, "-s", "count",
    )

    assert result.returncode == 1, result.stderr
    assert stdout_json(result) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert rows == [
        {
            "job_id": 7,
            "key": "7",
            "status": "failed",
            "error_type": "ValueError",
            "error_message": "7 is not welcome",
        }
    ]


@pytest.mark.parametrize("where", [["all"], ["ok,failed"], ["ok", "failed"]], ids=["all", "comma", "repeated"])
def test_where_all_forms_write_every_row(tmp_path: Path, where: list[str]) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))
    output = tmp_path / "rows.csv"
    options = [argument for value in where for argument in ("--where", value)]

    result = run_cli(
        "run", "tests.cli_jobs:square_but_seven", inputs, "-w", "2", *options, "-o", output
    )

    assert result.returncode == 1, result.stderr
    with output.open(newline="") as file:
        rows = list(csv.DictReader(file))
    statuses = {int(row["x"] or row["job_id"]): row["status"] for row in rows}
    assert len(rows) == 10
    assert statuses == {x: "failed" if x == 7 else "ok" for x in range(10)}


def test_where_ok_resumes_default_checkpoint(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))
    output = tmp_path / "rows.jsonl"
    arguments = ["run", SQUARE, inputs, "-w", "2", "-o", output, "--checkpoint", tmp_path / "run.sqlite"]
    first = run_cli(*arguments)

    second = run_cli(*arguments, "--where", "ok")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "resumed      10" in second.stderr.splitlines()
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["x"] for row in rows) == list(range(10))
    assert all("status" not in row for row in rows)


def test_where_all_status_field_taken_exit_three(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"x": 1, "status": "new"}])

    result = run_cli(
        "run", "tests.cli_jobs:echo", inputs, "-w", "1", "--where", "all",
        "-o", tmp_path / "rows.jsonl",
    )

    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert (
        "syncagg run: error: job 0 ({'x': 1, 'status': 'new'}) returned a row with a "
        "'status' field" in result.stderr
    )
    assert "--where ok" in result.stderr


def test_timeout_fails_hung_job(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(8)))

    result = run_cli(
        "run",
        "tests.cli_jobs:hang_on_three",
        inputs,
        "-w",
        "2",
        "--timeout",
        "1",
        "--retries",
        "0",
        "-s",
        "sum:x",
    )

    assert result.returncode == 1, result.stderr
    assert stdout_json(result) == sum(range(8)) - 3
    assert "ok           7" in result.stderr.splitlines()
    failure = [
        line for line in result.stderr.splitlines() if line.startswith("failure")
    ]
    assert len(failure) == 1
    assert failure[0].startswith("failure      job 3 (3): syncagg.Timeout: worker ")
    assert "ran longer than the 1 s timeout" in failure[0]


def test_invalid_json_input_exit_three(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("1\n2\n{oops\n")

    result = run_cli("run", SQUARE, inputs, "-w", "1")

    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "syncagg run: error: reading the inputs failed"
    )
    assert "line 3 is not valid JSON" in result.stderr


def test_formats_lists_suffixes() -> None:
    result = run_cli("formats")

    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["jsonl", ".jsonl", ".ndjson"] for line in lines)
    assert any(line.split()[:2] == ["csv", ".csv"] for line in lines)
    assert any(line.split()[:3] == ["parquet", ".parquet", ".pq"] for line in lines)
    assert any(line.split()[:2] == ["text", ".txt"] for line in lines)


def test_formats_closed_stdout_exit_141() -> None:
    result = run_cli_closed_stdout("formats")

    assert result.returncode == 141
    assert result.stderr == ""


def test_run_closed_stdout_exit_141(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", list(range(10)))
    output = tmp_path / "rows.jsonl"
    summary = tmp_path / "summary.json"

    result = run_cli_closed_stdout(
        "run", SQUARE, inputs, "-w", "2", "-q", "-o", output, "--summary", summary
    )

    assert result.returncode == 141
    assert result.stderr == ""
    assert len(output.read_text().splitlines()) == 10
    assert json.loads(summary.read_text())["result"] == 10


def test_inspect_help_has_no_quiet() -> None:
    result = run_cli("inspect", "--help")

    assert result.returncode == 0
    assert "--quiet" not in result.stdout
    assert "--verbose" not in result.stdout
    assert "--json" in result.stdout


def test_help_names_units() -> None:
    result = run_cli("run", "--help")

    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "seconds a job may run" in text
    assert "in bytes or with a unit such as 512MiB or 4GiB" in text
    assert "number of worker processes" in text
    assert "ok (the default), failed or all" in text
    assert "job_id, key, status, error_type and error_message" in text


@pytest.mark.parametrize(
    ("arguments", "named", "fix"),
    [
        (["nosuchmodule:f", "IN"], "'nosuchmodule'", "add that folder to PYTHONPATH"),
        (
            ["tests.cli_jobs:nope", "IN"],
            "'nope'",
            "its functions are: count_jobs, echo, hang_on_three",
        ),
        (
            ["tests.cli_jobs:NOT_A_FUNCTION", "IN"],
            "NOT_A_FUNCTION is a int",
            "pass a function",
        ),
        (["tests.cli_jobs", "IN"], "'tests.cli_jobs'", "expected MODULE:FUNCTION"),
        ([SQUARE, "missing.jsonl"], "'missing.jsonl' not found", "check the path"),
        ([SQUARE, "IN", "-o", "nofolder/rows.csv"], "'nofolder'", "mkdir -p nofolder"),
        (
            [SQUARE, "IN", "-o", "rows.xlsx"],
            "'rows.xlsx'",
            "pass --format with one of jsonl, json, csv, parquet, arrow",
        ),
        (
            [SQUARE, "IN", "-o", "rows.csv", "--format", "xls"],
            "'xls'",
            "use one of jsonl, json, csv, parquet, arrow",
        ),
        (
            [SQUARE, "IN", "--input-format", "xml"],
            "'xml'",
            "use one of jsonl, csv, parquet, text",
        ),
        (
            [SQUARE, "IN", "--strategy", "median:x"],
            "'median:x'",
            "use one of count, sum[:FIELD]",
        ),
        ([SQUARE, "IN", "--max-memory", "4 apples"], "'4 apples'", "'512MiB'"),
        ([SQUARE, "IN", "--workers", "0"], "'0'", "expected a positive whole number"),
        (
            [SQUARE, "IN", "--timeout", "-1"],
            "'-1'",
            "expected a positive number of seconds",
        ),
        (
            [SQUARE, "IN", "--checkpoint", "nofolder/run.sqlite"],
            "'nofolder'",
            "mkdir -p nofolder",
        ),
        (
            [SQUARE, "IN", "--where", "ok,done"],
            "'done'",
            "expected ok, failed or all, or several of them separated by commas",
        ),
    ],
    ids=[
        "module",
        "function",
        "not-callable",
        "no-colon",
        "input",
        "output-folder",
        "output-suffix",
        "format",
        "input-format",
        "strategy",
        "max-memory",
        "workers",
        "timeout",
        "checkpoint-folder",
        "where",
    ],
)
def test_bad_argument_one_line(
    tmp_path: Path, arguments: list[str], named: str, fix: str
) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [1])
    arguments = [str(inputs) if a == "IN" else a for a in arguments]

    result = run_cli("run", *arguments)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("syncagg run: error: ")
    assert named in result.stderr
    assert fix in result.stderr
    assert result.stdout == ""


def test_missing_command_exit_two() -> None:
    result = run_cli()

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "syncagg: error: the following arguments are required: COMMAND; see 'syncagg --help'"
    ]


def test_console_script_matches_module() -> None:
    script = Path(sys.executable).with_name("syncagg")
    if not script.exists():
        pytest.skip("the syncagg console script is not installed in this environment")

    result = subprocess.run(
        [script, "formats"], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0
    assert result.stdout == run_cli("formats").stdout


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(:\n", "failed with SyntaxError: "),
        ("raise RuntimeError('no config')\n", "failed with RuntimeError: no config"),
    ],
    ids=["syntax", "raises"],
)
def test_broken_module_one_line(tmp_path: Path, source: str, message: str) -> None:
    (tmp_path / "broken.py").write_text(source)
    inputs = write_jsonl(tmp_path / "in.jsonl", [1])
    command = [sys.executable, "-m", "syncagg", "run", "broken:f", str(inputs)]

    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "importing module 'broken' " + message in result.stderr
    assert f"(at {tmp_path / 'broken.py'}:1); fix the module" in result.stderr


def test_module_that_exits_at_import(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text("import sys\n\ndef f(x):\n    return x\n\nsys.exit(4)\n")
    inputs = write_jsonl(tmp_path / "in.jsonl", [1])
    command = [sys.executable, "-m", "syncagg", "run", "script:f", str(inputs)]

    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "importing module 'script' called sys.exit(4)" in result.stderr
    assert f"(at {tmp_path / 'script.py'}:6)" in result.stderr
    assert 'if __name__ == "__main__":' in result.stderr


def test_ctrl_c_while_module_imports(tmp_path: Path) -> None:
    # The module takes a minute to import; Ctrl-C meanwhile ends the command
    # with 130 and no traceback.
    (tmp_path / "slow.py").write_text(
        "import pathlib, time\npathlib.Path('importing').touch()\ntime.sleep(60)\n\ndef f(x):\n    return x\n"
    )
    inputs = write_jsonl(tmp_path / "in.jsonl", [1])
    command = [sys.executable, "-m", "syncagg", "run", "slow:f", str(inputs)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "importing").exists():
        assert process.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.01)

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 130
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["-o", "IN", "--format", "jsonl"], "--output"),
        (["-o", "OUT", "--summary", "OUT"], "--summary"),
        (["-o", "OUT", "--checkpoint", "OUT"], "--checkpoint"),
    ],
    ids=["output-is-input", "summary-is-output", "checkpoint-is-output"],
)
def test_path_used_twice_exit_two(tmp_path: Path, options: list[str], named: str) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [1, 2])
    before = inputs.read_bytes()
    out = tmp_path / "out.jsonl"
    names = {"IN": str(inputs), "OUT": str(out)}
    options = [names.get(option, option) for option in options]

    result = run_cli("run", SQUARE, inputs, *options)

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"{named} " in result.stderr
    assert "is the same file as" in result.stderr
    assert inputs.read_bytes() == before
    assert not out.exists()


def test_csv_not_utf8_exit_three(tmp_path: Path) -> None:
    inputs = tmp_path / "latin1.csv"
    inputs.write_bytes(b"n\n\xff\xfe1\n2\n")

    result = run_cli("run", "tests.cli_jobs:echo", inputs, "-q")

    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert f"{str(inputs)!r} is not valid UTF-8" in result.stderr.splitlines()[-1]


def test_csv_wide_field_read(tmp_path: Path) -> None:
    inputs = tmp_path / "wide.csv"
    inputs.write_text('n\n"' + "x" * 200_000 + '"\n')
    summary = tmp_path / "summary.json"

    result = run_cli("run", "tests.cli_jobs:echo", inputs, "-q", "--summary", summary)

    assert result.returncode == 0, result.stderr
    assert json.loads(summary.read_text())["counts"]["ok"] == 1


@pytest.mark.parametrize(
    ("policy", "header", "last"),
    [("extend", "a,b", "2,3"), ("ignore", "a", "2")],
)
def test_csv_extra_keys_on_command_line(tmp_path: Path, policy: str, header: str, last: str) -> None:
    # The first row lacks key b; by default the run stops, and --csv-extra
    # adds the column or drops the key.
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}, {"a": 2, "b": 3}])
    output = tmp_path / "rows.csv"

    stopped = run_cli("run", "tests.cli_jobs:slow_echo", inputs, "-w", "1", "-o", tmp_path / "stopped.csv")
    result = run_cli("run", "tests.cli_jobs:slow_echo", inputs, "-w", "1", "-o", output, "--csv-extra", policy)

    assert stopped.returncode == 3
    assert "--csv-extra extend or ignore" in stopped.stderr
    assert result.returncode == 0, result.stderr
    lines = output.read_text().splitlines()
    assert lines[0] == header
    assert sorted(lines[1:]) == sorted(["1" + ("," if policy == "extend" else ""), last])


def test_csv_extra_without_csv_output(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [1])

    result = run_cli("run", "tests.cli_jobs:echo", inputs, "-o", tmp_path / "rows.jsonl", "--csv-extra", "extend")

    assert result.returncode == 2
    assert "--csv-extra extend applies to CSV outputs" in result.stderr


def test_csv_extra_ignore_with_where_all(tmp_path: Path) -> None:
    # Failed rows bring their own columns, which a CSV output must add, so
    # --where all gives CSV outputs extend, and an explicit ignore is an error.
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}, {"a": 2, "b": 3}])
    output = tmp_path / "rows.csv"

    result = run_cli(
        "run", "tests.cli_jobs:echo", inputs, "-w", "1", "-o", output, "--where", "all", "--csv-extra", "ignore"
    )

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "--csv-extra ignore drops the columns of failed rows" in result.stderr


def test_stdin_error_line_counts_lines_only(tmp_path: Path) -> None:
    # A quiet spell between the lines must not count as lines.
    command = [sys.executable, "-m", "syncagg", "run", "tests.cli_jobs:echo", "-", "--input-format", "jsonl"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stdin is not None
    process.stdin.write(b'{"a": 1}\n')
    process.stdin.flush()
    time.sleep(0.5)
    _, stderr = process.communicate(b"not json\n", timeout=60)

    assert process.returncode == 3
    assert "standard input line 2 is not valid JSON" in stderr.decode()


def test_stop_before_first_checkpoint_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from syncagg.cli import _report_stop

    _report_stop("interrupted by Ctrl-C", tmp_path / "run.sqlite")
    (tmp_path / "run.sqlite").touch()
    _report_stop("interrupted by Ctrl-C", tmp_path / "run.sqlite")

    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        f"syncagg run: interrupted by Ctrl-C before the first checkpoint; {tmp_path / 'run.sqlite'} "
        "was not written, so the same command starts over"
    )
    assert lines[1].endswith("contains the jobs done so far, so running the same command resumes")
