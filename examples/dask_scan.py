"""Measure every file of a tree on a Dask cluster, with syncagg's outputs and checkpoint.

Each job reads one file on a Dask worker and returns its size, line count,
suffix and sha256; the collector adds them up per suffix. The run writes
``files.parquet``, ``files.jsonl``, ``summary.json`` with the totals, and its
checkpoint ``run.sqlite``. Run it again after Ctrl-C or a kill and it
resumes, on the same cluster or another one.

Without ``--scheduler`` the script starts a LocalCluster of ``--workers``
worker processes with one thread each, bound to 127.0.0.1. With
``--scheduler tcp://HOST:8786`` it runs on that cluster, whose workers must
see ``--root`` under the same path (a shared file system).

    python examples/dask_scan.py [OUT] [--root DIR] [--scheduler ADDRESS] [--workers N]

Needs the ``dask`` extra: ``.venv/bin/pip install '.[dask]'`` in the clone.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import orjson

import syncagg as sa

_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git"}
_TOTALS = ("files", "bytes", "lines")


def tree_files(root: Path) -> Iterator[str]:
    """Yield the files under ``root`` in a stable order, relative to it.

    The order must be the same in every run, because a checkpoint knows a
    job by its position in the inputs.
    """
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in _SKIPPED_DIRS)
        for name in sorted(names):
            yield os.path.relpath(os.path.join(folder, name), root)


def measure(relative: str, root: str) -> dict[str, Any]:
    """Read one file on a Dask worker and return its statistics."""
    data = Path(root, relative).read_bytes()
    return {
        "path": relative,
        "suffix": Path(relative).suffix or "(none)",
        "bytes": len(data),
        "lines": data.count(b"\n"),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def add_to_totals(totals: dict[str, dict[str, int]], row: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Add one file's statistics to the totals of its suffix; runs in the collector thread."""
    suffix = totals.setdefault(row["suffix"], dict.fromkeys(_TOTALS, 0))
    suffix["files"] += 1
    suffix["bytes"] += row["bytes"]
    suffix["lines"] += row["lines"]
    return totals


@contextlib.contextmanager
def connect(scheduler: str | None, workers: int) -> Iterator[distributed.Client]:
    """Connect to the scheduler at ``scheduler``, or start a LocalCluster on 127.0.0.1."""
    if scheduler is not None:
        with distributed.Client(scheduler) as client:
            yield client
        return

    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


def main(argv: list[str] | None = None) -> sa.RunSummary:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="out-dask", help="output folder (default: out-dask)")
    parser.add_argument(
        "--root",
        default=sysconfig.get_paths()["stdlib"],
        help="tree to measure (default: this Python's standard library)",
    )
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (default: start a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster (default: 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be 1 or more, got {args.workers}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = str(Path(args.root).resolve())
    with connect(args.scheduler, args.workers) as client:
        aggregator = sa.Aggregator(
            strategy=sa.Reduce(add_to_totals, {}),
            outputs=[out / "files.parquet", out / "files.jsonl"],
            checkpoint=out / "run.sqlite",
            executor=client,
            progress=not args.no_progress,
        )
        # measure lives in __main__, so cloudpickle sends it by value and
        # the workers need not import this script.
        try:
            summary = aggregator.run(functools.partial(measure, root=root), tree_files(Path(root)))
        except KeyboardInterrupt:
            print(f"interrupted; run the same command again to resume from {out / 'run.sqlite'}", file=sys.stderr)
            raise SystemExit(130) from None

    report = {
        "root": root,
        "counts": {"ok": summary.counts["ok"], "failed": summary.counts["failed"]},
        "suffixes": dict(sorted(summary.value.items())),
        "failures": [{"path": f.key, "error": f"{f.error.type}: {f.error.message}"} for f in summary.failures if f.error],
    }
    (out / "summary.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(
        f"{summary.counts['ok']} files measured, {summary.counts['failed']} failed, "
        f"{summary.counts['resumed']} done by an earlier run; outputs in {out}/",
        file=sys.stderr,
    )
    return summary


if __name__ == "__main__":
    main()
