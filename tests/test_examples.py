"""Every example runs on small input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent


def _run_scan(out: Path, root: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "examples/scan_stdlib.py", str(out), "--root", str(root), "--workers", "2", "--no-progress"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_scan_example_twice(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    for i in range(12):
        (root / "pkg" / f"m{i}.py").write_text(f"def f():\n    return {i}\n")
    (root / "bad.py").write_text("class (:\n")
    out = tmp_path / "out"

    first = _run_scan(out, root)
    assert first.returncode == 0, first.stderr
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    summary = json.loads(files["summary.json"])

    second = _run_scan(out, root)
    assert second.returncode == 0, second.stderr

    assert sorted(files) == ["files.csv", "files.jsonl", "files.parquet", "run.sqlite", "summary.json"]
    assert summary["counts"] == {"ok": 12, "failed": 1}
    assert summary["packages"]["pkg"]["files"] == 12
    assert summary["packages"]["pkg"]["functions"] == 12
    assert [f["path"] for f in summary["failures"]] == ["bad.py"]
    assert "0 of them done by an earlier run" in first.stderr
    assert "an earlier run had finished every file" in second.stderr
    for name in ("files.csv", "files.jsonl", "files.parquet", "summary.json"):
        assert (out / name).read_bytes() == files[name]


def test_cli_example_twice(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "examples/cli_textstats.py", str(out), "--lines", "20", "--workers", "2"]

    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    # Lines hold 1 to 8 words in turn: 1..8, 1..8, 1..4.
    assert first.stdout == "82\n"
    assert second.stdout == "82\n"
    assert "82 words in 20 lines" in first.stderr
    assert "resumed      20" in second.stderr.splitlines()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": 20, "failed": 0, "resumed": 20}
    rows = pq.read_table(out / "lines.parquet").to_pylist()
    assert len(rows) == 20
    assert sorted(row["words"] for row in rows)[-1] == 8
