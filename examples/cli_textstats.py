"""Run the ``syncagg`` command over a text file, one job per line.

Writes a small text file (or takes yours with ``--input``), then runs::

    python -m syncagg run textstats:measure LINES.txt --strategy sum:words \
        --output OUT/lines.parquet --checkpoint OUT/run.sqlite --summary OUT/summary.json

from the folder of this script, so the command can import ``textstats``.
The command prints the total number of words on standard output and a
summary table on standard error. Running it again resumes, or returns at
once if the run finished.

    python examples/cli_textstats.py [OUT] [--input FILE] [--lines N] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


def write_lines(path: Path, count: int) -> None:
    """Write ``count`` lines of 1 to 8 words each."""
    lines = [" ".join(_WORDS[: 1 + i % len(_WORDS)]) for i in range(count)]
    path.write_text("".join(line + "\n" for line in lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out",
        nargs="?",
        default="out-textstats",
        help="output folder (default: out-textstats)",
    )
    parser.add_argument(
        "--input", type=Path, help="text file to measure (default: write one into OUT)"
    )
    parser.add_argument(
        "--lines",
        type=int,
        default=1000,
        help="lines of the written file (default: 1000)",
    )
    parser.add_argument("--workers", default="2", help="worker processes (default: 2)")
    arguments = parser.parse_args(argv)

    out = Path(arguments.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = arguments.input.resolve() if arguments.input else out / "lines.txt"
    if arguments.input is None:
        write_lines(source, arguments.lines)

    command = [
        sys.executable,
        "-m",
        "syncagg",
        "run",
        "textstats:measure",
        str(source),
        "--workers",
        arguments.workers,
        "--strategy",
        "sum:words",
        "--output",
        str(out / "lines.parquet"),
        "--checkpoint",
        str(out / "run.sqlite"),
        "--summary",
        str(out / "summary.json"),
    ]
    result = subprocess.run(command, cwd=HERE, check=False)
    if result.returncode in (0, 1):
        summary = json.loads((out / "summary.json").read_text())
        print(
            f"{summary['result']} words in {summary['counts']['ok']} lines",
            file=sys.stderr,
        )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
