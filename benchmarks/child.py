"""Run one measurement in a fresh interpreter, for ``benchmarks.measure``.

    python -m benchmarks.child case WORKLOAD LIBRARY SIZE WORKDIR
    python -m benchmarks.child module NAME MODE REPEAT

A fresh process per measurement keeps one run's freed memory, which Python
keeps for reuse, from hiding the next run's peak. For a case, the child
imports everything, prints ``ready``, waits for a line on standard input,
so the parent can read its baseline memory first, then runs the case and
prints ``{"seconds": ...}`` as one JSON line. For a module, it prints the
rows that the module's ``rows`` function returns.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

from benchmarks import cases


def run_case(workload: str, library: str, size: int, workdir: Path) -> None:
    variant = next(v for v in cases.WORKLOADS[workload].variants if v.library == library)
    if variant.requires is not None:
        importlib.import_module(variant.requires)
    print("ready", flush=True)
    sys.stdin.readline()

    began = time.perf_counter()
    variant.run(size, workdir)
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds}), flush=True)


def run_module(name: str, mode: str, repeat: int) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    rows = module.rows(quick=mode != "full", repeat=repeat)
    print(json.dumps(rows), flush=True)


def main(argv: list[str]) -> None:
    if argv[0] == "case":
        run_case(argv[1], argv[2], int(argv[3]), Path(argv[4]))
    elif argv[0] == "module":
        run_module(argv[1], argv[2], int(argv[3]))
    else:
        raise SystemExit(f"invalid kind {argv[0]!r}: expected 'case' or 'module'")


if __name__ == "__main__":
    main(sys.argv[1:])
