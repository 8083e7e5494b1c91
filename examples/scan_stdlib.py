"""Scan a Python source tree, one job per ``.py`` file, with syncagg.

By default the tree is the standard library of the running Python. Each job
parses one file with ``ast`` and reports its size, lines, functions, classes,
imports and sha256; a file that does not parse is a failed job. The run
writes ``files.parquet``, ``files.csv``, ``files.jsonl``, ``summary.json``
with totals per top-level package, and its checkpoint ``run.sqlite``.

Run it again with the same arguments after Ctrl-C or a kill and it resumes;
run it after it finished and it finds everything done.

    python examples/scan_stdlib.py [OUT] [--root DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

import syncagg as sa

_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_TOTALS = ("files", "bytes", "lines", "functions", "classes", "imports")


def python_files(root: Path) -> Iterator[str]:
    """Yield the ``.py`` files under ``root`` in a stable order, relative to it."""
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in _SKIPPED_DIRS)
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(folder, name), root)


def analyze(relative: str, root: str) -> dict[str, Any]:
    """Parse one file and return its statistics; raises ``SyntaxError`` if it does not parse."""
    data = Path(root, relative).read_bytes()
    tree = ast.parse(data, filename=relative)
    nodes = list(ast.walk(tree))
    parts = Path(relative).parts
    return {
        "path": relative,
        "package": parts[0] if len(parts) > 1 else Path(relative).stem,
        "bytes": len(data),
        "lines": len(data.splitlines()),
        "functions": sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in nodes),
        "classes": sum(isinstance(n, ast.ClassDef) for n in nodes),
        "imports": sum(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def add_to_totals(totals: dict[str, dict[str, int]], row: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Add one file's statistics to the totals of its package."""
    package = totals.setdefault(row["package"], dict.fromkeys(_TOTALS, 0))
    package["files"] += 1
    for name in _TOTALS[1:]:
        package[name] += row[name]
    return totals


def main(argv: list[str] | None = None) -> sa.RunSummary:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="out", help="output folder (default: out)")
    parser.add_argument(
        "--root",
        default=sysconfig.get_paths()["stdlib"],
        help="source tree to scan (default: this Python's standard library)",
    )
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: usable CPUs)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = str(Path(args.root).resolve())
    aggregator = sa.Aggregator(
        strategy=sa.Reduce(add_to_totals, {}),
        outputs=[out / "files.parquet", out / "files.csv", out / "files.jsonl"],
        checkpoint=out / "run.sqlite",
        workers=args.workers,
        progress=not args.no_progress,
    )
    try:
        summary = aggregator.run(functools.partial(analyze, root=root), python_files(Path(root)))
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to resume from {out / 'run.sqlite'}", file=sys.stderr)
        raise SystemExit(130) from None

    report = {
        "root": root,
        "counts": {"ok": summary.counts["ok"], "failed": summary.counts["failed"]},
        "packages": dict(sorted(summary.value.items())),
        "failures": [{"path": f.key, "error": f"{f.error.type}: {f.error.message}"} for f in summary.failures if f.error],
    }
    (out / "summary.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    done = summary.counts["ok"] + summary.counts["failed"]
    if summary.counts["resumed"] == done:
        status = "an earlier run had finished every file; the outputs are unchanged"
    else:
        status = f"{summary.counts['resumed']} of them done by an earlier run"
    print(
        f"{summary.counts['ok']} files scanned, {summary.counts['failed']} failed, {status}; "
        f"outputs in {out}/",
        file=sys.stderr,
    )
    return summary


if __name__ == "__main__":
    main()
