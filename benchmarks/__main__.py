"""Run syncagg and its peers on every workload and write docs/benchmarks.md and its plot.

    python -m benchmarks [--quick | --tiny] [--repeat N] [--only NAME ...]

Installs nothing: the peers come from ``pip install '.[bench]'``, and a peer
that is not installed is left out with a note. Every variant of a workload
runs in the same invocation, alternating, each run in a fresh interpreter
(see ``benchmarks/measure.py``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from benchmarks import cases, measure, peers, report
from benchmarks.results import Row, add_ratios, external_row, summarize

HERE = Path(__file__).resolve().parent
# Modules of this package that other benchmarks live in, run when present.
EXTERNAL = ("transport", "combine", "outputs")
# Modules that give rows for an external module that defines no rows() function.
ADAPTERS = {"combine": "combine_rows"}
DEFAULT_REPEAT = {"full": 3, "quick": 2, "tiny": 1}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="mode",
                      help="small sizes: about two minutes for the whole run on 2 cores")
    size.add_argument("--tiny", action="store_const", const="tiny", dest="mode",
                      help="tiny sizes that only check the runner works; the figures mean nothing, "
                           "and the other modules' benchmarks are listed but not run")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="runs of each variant; medians are reported (default: 3, 2 with --quick, 1 with --tiny)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only this workload; repeatable: {', '.join([*cases.WORKLOADS, *EXTERNAL])}")
    parser.add_argument("--markdown", type=Path, default=HERE.parent / "docs" / "benchmarks.md",
                        help="file whose runner section gets the tables (default: docs/benchmarks.md)")
    parser.add_argument("--plot", type=Path, default=HERE.parent / "docs" / "benchmarks.png",
                        help="PNG file for the plot (default: docs/benchmarks.png)")
    parser.add_argument("--save-rows", type=Path, metavar="PATH",
                        help="also write the table's rows as JSON to PATH")
    parser.add_argument("--load-rows", type=Path, metavar="PATH",
                        help="run nothing: redraw the section and plot from rows saved with --save-rows")
    args = parser.parse_args(argv)
    args.mode = args.mode or "full"
    args.repeat = args.repeat or DEFAULT_REPEAT[args.mode]
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    names = [*cases.WORKLOADS, *EXTERNAL]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"unknown workload {', '.join(unknown)}; choose from {', '.join(names)}")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_size(workload: cases.Workload, size: int, repeat: int) -> list[Row]:
    """Run every installed variant ``repeat`` times at one size, alternating."""
    variants = [v for v in workload.variants if peers.installed(v.requires)]
    runs: dict[str, list[measure.Measurement]] = {v.library: [] for v in variants}
    for repetition in range(repeat):
        # Rotate the order, so no variant always runs first or right after the same one.
        shift = repetition % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            try:
                run = measure.run_case(workload.name, variant.library, size)
            except measure.MeasurementError as error:
                log(str(error))
                continue
            runs[variant.library].append(run)
            log(f"{workload.name} {size:,} {variant.library}: {run.seconds:.2f} s, "
                f"peak {run.peak_bytes / 2**20:,.1f} MiB above baseline")
    rows = [summarize(workload.name, size, workload.unit, v.library, runs[v.library]) for v in variants]
    rows += [Row(workload.name, size, v.library, 0, unit=workload.unit, note=f"not run: {v.requires} is not installed")
             for v in workload.variants if not peers.installed(v.requires)]
    return rows


def defines_rows(path: Path) -> bool:
    """Return whether the module at ``path`` defines ``rows`` at module level, without importing it."""
    tree = ast.parse(path.read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == "rows" for node in tree.body)


def run_external(name: str, mode: str, repeat: int) -> list[Row]:
    """Run another benchmark module of this package through its ``rows`` function."""
    source = name
    if not defines_rows(HERE / f"{name}.py"):
        source = ADAPTERS.get(name, "")
    if not source:
        log(f"benchmarks/{name}.py defines no rows(quick, repeat) function; left out")
        return [Row(name, 0, f"benchmarks/{name}.py", 0, note="not run: the module defines no rows() function")]
    try:
        found = measure.run_module(source, mode, repeat)
    except measure.MeasurementError as error:
        log(str(error))
        return [Row(name, 0, f"benchmarks/{name}.py", 0, note="failed: see the runner's output")]
    return [external_row(name, row) for row in found]


def run_all(args: argparse.Namespace) -> list[Row]:
    chosen = set(args.only or [*cases.WORKLOADS, *EXTERNAL])
    rows: list[Row] = []
    for workload in cases.WORKLOADS.values():
        if workload.name in chosen:
            for size in workload.sizes[args.mode]:
                rows += run_size(workload, size, args.repeat)
    for name in EXTERNAL:
        if name not in chosen or not (HERE / f"{name}.py").exists():
            continue
        if args.mode == "tiny":
            # The modules' smallest size is --quick, which takes minutes: too long for a smoke test.
            rows.append(Row(name, 0, f"benchmarks/{name}.py", 0, note="not run with --tiny; run --quick"))
        else:
            rows += run_external(name, args.mode, args.repeat)
    add_ratios(rows)
    return rows


def measuring_options(argv: list[str]) -> list[str]:
    """Return ``argv`` without ``--save-rows PATH``, which changes no figure."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--save-rows":
            skip = True
        elif not arg.startswith("--save-rows="):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.load_rows is not None:
        saved = json.loads(args.load_rows.read_text())
        rows = [Row(**row) for row in saved["rows"]]
        setup = report.Setup(**saved["setup"])
    else:
        rows = run_all(args)
        command = shlex.join(["python", "-m", "benchmarks", *measuring_options(argv)])
        setup = report.Setup.current(command, args.repeat)
    if args.save_rows is not None:
        saved = {"setup": dataclasses.asdict(setup), "rows": [dataclasses.asdict(row) for row in rows]}
        args.save_rows.write_text(json.dumps(saved, indent=1))
    titles = {w.name: (w.title, w.method) for w in cases.WORKLOADS.values()}
    plot_link = Path(args.plot).name if args.plot.parent == args.markdown.parent else str(args.plot)
    text = report.section(rows, titles, setup, plot_link)
    report.write_section(args.markdown, text)
    log(f"wrote {args.markdown}")
    if peers.installed("matplotlib"):
        from benchmarks import plot

        plot.write_plot(rows, args.plot)
        log(f"wrote {args.plot}")
    else:
        log(f"matplotlib is not installed, so {args.plot} was not written: pip install '.[bench]'")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
