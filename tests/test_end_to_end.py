"""The source-tree scan from the example, end to end on a tree made by the test."""

from __future__ import annotations

import csv
import functools
import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

import syncagg as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import scan_stdlib  # noqa: E402

BROKEN = ("pkg_b/broken.py", "top_broken.py")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for package in ("pkg_a", "pkg_b", "pkg_a/sub"):
        (root / package).mkdir(parents=True)
    for i in range(30):
        package = ("pkg_a", "pkg_b", "pkg_a/sub")[i % 3]
        body = f"import os\nfrom sys import path\n\nclass C{i}:\n    def m(self):\n        return {i}\n"
        body += "".join(f"\ndef f{j}():\n    return {j}\n" for j in range(i % 5))
        (root / package / f"mod{i}.py").write_text(body)
    (root / "top.py").write_text("x = 1\n")
    for name in BROKEN:
        (root / name).write_text("def broken(:\n")
    return root


def _sequential(root: Path) -> tuple[dict[str, dict[str, Any]], set[str]]:
    rows, failed = {}, set()
    for relative in scan_stdlib.python_files(root):
        try:
            rows[relative] = scan_stdlib.analyze(relative, str(root))
        except SyntaxError:
            failed.add(relative)
    return rows, failed


def test_scan_matches_sequential(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    expected, expected_failed = _sequential(tree)
    aggregator = sa.Aggregator(
        strategy=sa.Reduce(scan_stdlib.add_to_totals, {}),
        outputs=[out / "files.parquet", out / "files.csv", out / "files.jsonl"],
        workers=2,
        progress=False,
    )

    summary = aggregator.run(functools.partial(scan_stdlib.analyze, root=str(tree)), scan_stdlib.python_files(tree))

    assert set(BROKEN) == expected_failed
    assert summary.counts["ok"] == len(expected)
    assert summary.counts["failed"] == len(BROKEN)
    assert {f.key for f in summary.failures} == set(BROKEN)
    assert {f.error.type for f in summary.failures if f.error} == {"SyntaxError"}
    assert all("Traceback" in f.error.traceback for f in summary.failures if f.error)

    totals: dict[str, dict[str, int]] = {}
    for row in expected.values():
        scan_stdlib.add_to_totals(totals, row)
    assert summary.value == totals

    parquet = {row["path"]: row for row in pq.read_table(out / "files.parquet").to_pylist()}
    assert parquet == expected

    lines = [json.loads(line) for line in (out / "files.jsonl").read_text().splitlines()]
    assert {row["path"]: row for row in lines} == expected

    with open(out / "files.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(expected)
    for row in rows:
        assert row == {k: str(v) for k, v in expected[row["path"]].items()}


def test_scan_outputs_read_by_duckdb_and_pandas(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    expected, _ = _sequential(tree)
    aggregator = sa.Aggregator(
        outputs=[out / "files.parquet", out / "files.csv", out / "files.jsonl"], workers=2, progress=False
    )
    aggregator.run(functools.partial(scan_stdlib.analyze, root=str(tree)), scan_stdlib.python_files(tree))
    lines = sum(row["lines"] for row in expected.values())

    for name, reader in (
        ("files.parquet", "read_parquet"),
        ("files.csv", "read_csv_auto"),
        ("files.jsonl", "read_json_auto"),
    ):
        query = f"SELECT count(*), sum(lines) FROM {reader}('{out / name}')"
        assert duckdb.sql(query).fetchall() == [(len(expected), lines)]

    frames = [
        pd.read_parquet(out / "files.parquet"),
        pd.read_csv(out / "files.csv"),
        pd.read_json(out / "files.jsonl", lines=True),
    ]
    for frame in frames:
        assert sorted(frame["path"]) == sorted(expected)
        assert int(frame["functions"].sum()) == sum(row["functions"] for row in expected.values())
