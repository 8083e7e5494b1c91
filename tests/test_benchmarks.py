"""The benchmark runner at tiny sizes: it completes and writes every workload's table.

Timings are not checked, because on a shared machine they depend on the load more than on the code.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OTHER_SECTION = "## A section written by someone else\n\nIt must survive the runner.\n"


@pytest.mark.timeout(300)
def test_runner_tiny_writes_every_workload(tmp_path: Path) -> None:
    from benchmarks import cases

    markdown = tmp_path / "benchmarks.md"
    plot = tmp_path / "benchmarks.png"
    markdown.write_text("# Benchmarks\n\n" + OTHER_SECTION)
    command = [sys.executable, "-m", "benchmarks", "--tiny", "--markdown", str(markdown), "--plot", str(plot)]

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=280, check=False)

    assert done.returncode == 0, done.stderr[-4000:]
    text = markdown.read_text()
    assert OTHER_SECTION in text
    assert text.count("<!-- benchmarks-runner:start") == 1
    assert text.count("<!-- benchmarks-runner:end -->") == 1
    for name in cases.WORKLOADS:
        assert f"### {name}: " in text, name
    for module in ("transport", "combine", "outputs"):
        if (REPO / "benchmarks" / f"{module}.py").exists():
            assert f"### {module}" in text, module
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.stat().st_size > 0


def test_runner_rewrites_only_its_section(tmp_path: Path) -> None:
    from benchmarks import report

    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\n" + OTHER_SECTION)
    first = f"{report.START}\nfirst\n{report.END}\n"
    second = f"{report.START}\nsecond\n{report.END}\n"

    report.write_section(markdown, first)
    report.write_section(markdown, second)

    text = markdown.read_text()
    assert OTHER_SECTION in text
    assert "second" in text
    assert "first" not in text
