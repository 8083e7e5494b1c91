"""The ``syncagg`` command: run a function over input files, inspect a checkpoint.

Exit codes: 0 every job succeeded, 1 some jobs failed, 2 invalid arguments,
3 the run stopped on an error (reading inputs, writing outputs, the
checkpoint, the strategy or the memory budget), 130 interrupted by Ctrl-C,
141 the reader of standard output or standard error closed the pipe, 143
stopped by SIGTERM. After 130 or 143 the checkpoint contains every job done
so far, and the same command resumes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

import syncagg
from syncagg.aggregator import Aggregator
from syncagg.cli_errors import UsageError
from syncagg.cli_inputs import INPUT_FORMATS, open_inputs
from syncagg.cli_inspect import describe_checkpoint, format_report
from syncagg.cli_pipes import EXIT_CLOSED_PIPE, closed_pipe, discard_closed_output
from syncagg.cli_strategies import STRATEGY_FORMS, Aggregation, parse_strategy
from syncagg.cli_where import fit_outputs, parse_where, where_pipeline
from syncagg.errors import CheckpointMismatchError, StrategyError, SyncaggError
from syncagg.memory import MemoryLimitError, format_bytes, parse_memory
from syncagg.outputs.arrowipc import ArrowIpc
from syncagg.outputs.base import Output, from_path, json_default
from syncagg.outputs.csvfile import Csv
from syncagg.outputs.jsonarray import Json
from syncagg.outputs.jsonlines import JsonLines
from syncagg.outputs.parquet import Parquet
from syncagg.outputs.registry import available_formats
from syncagg.progress import LOG_DATE_FORMAT, LOG_FORMAT
from syncagg.summary import RunSummary

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED_JOBS = 1
EXIT_USAGE = 2
EXIT_RUN_ERROR = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

# The built-in output formats; plugins of the syncagg.formats entry point
# group are looked up when the command runs (see _output_formats).
OUTPUT_FORMATS: dict[str, tuple[type[Output], str]] = {
    output_type.format: (output_type, output_type.description)
    for output_type in (JsonLines, Json, Csv, Parquet, ArrowIpc)
}

_FAILURES_SHOWN = 5

logger = logging.getLogger("syncagg.cli")


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a usage error as one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_USAGE, f"{self.prog}: error: {message}; see '{self.prog} --help'\n"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``syncagg`` command with ``argv`` (default ``sys.argv[1:]``) and return its exit code.

    Returns 141 without a message when the reader of standard output or
    standard error has closed the pipe.
    """
    try:
        try:
            return _dispatch(argv)
        finally:
            # Flushed here, not at exit, so a closed pipe raises where it is caught.
            sys.stdout.flush()
    except KeyboardInterrupt:
        # Ctrl-C before the run started, for example while the user's module
        # imports; a run's own Ctrl-C is reported in _execute.
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not closed_pipe():
            raise
        discard_closed_output()
        return EXIT_CLOSED_PIPE


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    _configure_logging(arguments.verbose, arguments.quiet)
    try:
        return int(arguments.command(arguments))
    except UsageError as exc:
        print(f"syncagg {arguments.command_name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``syncagg`` command and its subcommands."""
    parser = _Parser(
        prog="syncagg",
        description="Run a function over many inputs in parallel and aggregate the results.",
        epilog="Exit codes: 0 all jobs ok, 1 some jobs failed, 2 invalid arguments, 3 the run "
        "stopped on an error, 130 Ctrl-C, 141 output pipe closed, 143 SIGTERM. "
        "See docs/cli.md.",
    )
    parser.add_argument(
        "--version", action="version", version=f"syncagg {syncagg.__version__}"
    )
    common = _Parser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at DEBUG level, including every failed job after the first 20",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="show no progress and no summary; log warnings and errors only",
    )

    commands = parser.add_subparsers(
        title="commands", metavar="COMMAND", required=True, parser_class=_Parser
    )
    _add_run(commands, common)

    # inspect and formats log nothing and show no progress, so they take
    # neither --verbose nor --quiet.
    inspect = commands.add_parser(
        "inspect",
        help="show what a checkpoint records",
        description="Show what a checkpoint records.",
    )
    inspect.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        type=Path,
        help="the checkpoint file of a run",
    )
    inspect.add_argument(
        "--json", action="store_true", help="print one JSON object instead of text"
    )
    inspect.set_defaults(
        command=_inspect, command_name="inspect", verbose=False, quiet=False
    )

    formats = commands.add_parser(
        "formats",
        help="list the input and output formats",
        description="List the formats.",
    )
    formats.set_defaults(
        command=_formats, command_name="formats", verbose=False, quiet=False
    )
    return parser


def _add_run(commands: Any, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run a function over the rows of input files",
        description="Run MODULE:FUNCTION on every row of the input files, in worker processes.",
    )
    run.add_argument(
        "function",
        metavar="MODULE:FUNCTION",
        help="the function to run, importable by module and name, such as mypkg.jobs:analyze",
    )
    run.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="input files, read in order; the suffix (.jsonl, .csv, .parquet, .txt) sets the format; '-' reads standard input",
    )
    run.add_argument(
        "--input-format",
        metavar="NAME",
        help=f"format of every INPUT instead of its suffix: {', '.join(INPUT_FORMATS)}",
    )
    run.add_argument(
        "-o",
        "--output",
        action="append",
        default=[],
        metavar="PATH",
        help=(
            "write one row per successful job to PATH (repeatable), or per job that "
            "--where selects; the suffix sets the format"
        ),
    )
    run.add_argument(
        "--where",
        action="append",
        default=[],
        type=parse_where,
        metavar="STATUS",
        help=(
            "results that go on to the strategy and the outputs: ok (the default), failed "
            "or all; repeatable or comma-separated. A failed job becomes an output row "
            "with the columns job_id, key, status, error_type and error_message, and "
            "every row then has a status column (ok or failed)"
        ),
    )
    run.add_argument(
        "--csv-extra",
        choices=("error", "ignore", "extend"),
        default="error",
        help=(
            "what a CSV output does with a row whose keys the first rows lacked: stop "
            "the run (error, the default), drop those keys (ignore), or add them as "
            "columns (extend), which rewrites the header; with --where all or failed, "
            "CSV outputs always extend"
        ),
    )
    run.add_argument(
        "--format",
        metavar="NAME",
        help=(
            f"format of every --output instead of its suffix: {', '.join(OUTPUT_FORMATS)}, "
            "or a plugin's format (see 'syncagg formats')"
        ),
    )
    _add_run_controls(run)
    run.set_defaults(command=_run, command_name="run")


def _add_run_controls(run: argparse.ArgumentParser) -> None:
    """Add the options of ``syncagg run`` that set checkpoints, workers and limits."""
    run.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="SQLite file that records progress; the same command resumes from it",
    )
    run.add_argument(
        "--checkpoint-seconds",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between two checkpoints (default: 30)",
    )
    run.add_argument(
        "-s",
        "--strategy",
        default="count",
        metavar="SPEC",
        help=f"aggregation printed to standard output as JSON (default: count): {', '.join(STRATEGY_FORMS)}",
    )
    run.add_argument(
        "-w",
        "--workers",
        type=_positive_int,
        metavar="N",
        help="number of worker processes (default: the CPUs this process may use)",
    )
    run.add_argument(
        "--retries",
        type=_non_negative_int,
        default=1,
        metavar="N",
        help="times a job runs again after its worker died or timed out (default: 1)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="seconds a job may run; a longer job has its worker killed and is retried or failed (default: no limit)",
    )
    run.add_argument(
        "--max-memory",
        type=_memory_size,
        metavar="SIZE",
        help="memory budget of the parent and its workers together, in bytes or with a unit such as 512MiB or 4GiB (default: no budget)",
    )
    run.add_argument(
        "--summary",
        type=Path,
        metavar="PATH",
        help="write the run summary and the result as JSON to PATH",
    )
    run.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress log lines when standard error is not a terminal (default: 10)",
    )


def _run(arguments: argparse.Namespace) -> int:
    _check_distinct_paths(arguments)
    fn = load_function(arguments.function)
    inputs = open_inputs(arguments.inputs, arguments.input_format)
    pipeline = where_pipeline(arguments.where)
    outputs = fit_outputs(_outputs(arguments.output, arguments.format, arguments.csv_extra), pipeline)
    for path in (arguments.checkpoint, arguments.summary):
        if path is not None:
            _check_folder(
                path, "--checkpoint" if path is arguments.checkpoint else "--summary"
            )
    aggregation = parse_strategy(arguments.strategy)
    try:
        aggregator = Aggregator(
            strategy=aggregation.strategy,
            outputs=outputs,
            checkpoint=arguments.checkpoint,
            checkpoint_seconds=arguments.checkpoint_seconds,
            workers=arguments.workers,
            progress=not arguments.quiet,
            retries=arguments.retries,
            timeout=arguments.timeout,
            max_memory=arguments.max_memory,
            progress_interval=arguments.progress_interval,
            pipeline=pipeline,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _execute(aggregator, fn, inputs, aggregation, arguments)


def _execute(
    aggregator: Aggregator,
    fn: Callable[[Any], Any],
    inputs: Any,
    aggregation: Aggregation,
    arguments: argparse.Namespace,
) -> int:
    try:
        summary = aggregator.run(fn, inputs)
    except KeyboardInterrupt:
        _report_stop("interrupted by Ctrl-C", arguments.checkpoint)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        if exc.code == EXIT_TERMINATED:
            _report_stop("stopped by SIGTERM", arguments.checkpoint)
        raise
    except CheckpointMismatchError as exc:
        print(f"syncagg run: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SyncaggError as exc:
        print(f"syncagg run: error: {_run_error(exc, aggregation)}", file=sys.stderr)
        return EXIT_RUN_ERROR

    result = aggregation.result()
    # The summary file comes first, so a closed standard output cannot lose it.
    if arguments.summary is not None:
        _write_summary(arguments.summary, summary, result, arguments)
    sys.stdout.buffer.write(_to_json(result) + b"\n")
    sys.stdout.flush()
    if not arguments.quiet:
        print(format_summary(summary), file=sys.stderr)
    return EXIT_OK if summary.ok else EXIT_FAILED_JOBS


def _run_error(exc: SyncaggError, aggregation: Aggregation) -> str:
    """Return the message of an error that stopped the run, in command-line terms."""
    if isinstance(exc, StrategyError) and exc.__cause__ is not None:
        # The cause's message names the field and the fix; the library's
        # own message would name the strategy's internal classes.
        return f"--strategy {aggregation.spec}: {exc.__cause__}"
    if isinstance(exc, MemoryLimitError) and exc.limit:
        return (
            f"memory use {format_bytes(exc.usage)} of the parent and its workers passed "
            f"--max-memory {format_bytes(exc.limit)} ({exc.limit} bytes) while --strategy "
            "collect kept every result in memory; use a strategy that keeps one running "
            "value, such as count, sum:FIELD or group:KEY:count, write the rows with "
            "--output PATH, or raise --max-memory"
        )
    return str(exc)


def load_function(spec: str) -> Callable[[Any], Any]:
    """Import ``MODULE:FUNCTION`` and return the function.

    The current folder comes first on the module path, as with ``python -m``.
    Raises ``UsageError`` if the module does not import or has no such callable.
    """
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise UsageError(
            f"expected MODULE:FUNCTION such as mypkg.jobs:analyze, got {spec!r}"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"cannot import module {module_name!r} ({exc}); run syncagg from the folder that "
            "contains it, or add that folder to PYTHONPATH"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any error while importing the user's module
        raise UsageError(
            f"importing module {module_name!r} failed with {type(exc).__name__}: {exc} "
            f"(at {_error_location(exc)}); fix the module"
        ) from None
    except SystemExit as exc:
        raise UsageError(
            f"importing module {module_name!r} called sys.exit({exc.code!r}) (at "
            f"{_error_location(exc)}); put the module's script code under "
            '`if __name__ == "__main__":`'
        ) from None
    return _attribute(module, module_name, name)


def _error_location(exc: BaseException) -> str:
    """Return ``file:line`` where an import failed: the syntax error, or the raising line."""
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}"
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{frame.filename}:{frame.lineno}"


def _attribute(module: Any, module_name: str, name: str) -> Callable[[Any], Any]:
    value: Any = module
    for part in name.split("."):
        if not hasattr(value, part):
            functions = _defined_functions(module)
            known = ", ".join(functions[:20]) or "none"
            raise UsageError(
                f"module {module_name!r} has no function {name!r}; its functions are: {known}"
            )
        value = getattr(value, part)
    if not callable(value):
        raise UsageError(
            f"{module_name}:{name} is a {type(value).__qualname__}, not a function; pass a function"
        )
    return value  # type: ignore[no-any-return]


def _defined_functions(module: Any) -> list[str]:
    """Return the public functions that ``module`` defines itself, not those it imports."""
    return sorted(
        name
        for name, value in vars(module).items()
        if callable(value)
        and not name.startswith("_")
        and getattr(value, "__module__", None) == module.__name__
    )


def _output_formats() -> dict[str, tuple[type[Output], str]]:
    """Return the built-in formats and those of installed plugins, by name."""
    return {name: (output_type, output_type.description) for name, output_type in available_formats().items()}


def _outputs(paths: list[str], format_name: str | None, csv_extra: str = "error") -> list[Output]:
    formats = _output_formats()
    if format_name is not None and format_name not in formats:
        raise UsageError(
            f"unknown output format {format_name!r}; use one of {', '.join(formats)}"
        )
    if format_name is not None and not paths:
        raise UsageError(
            "--format sets the format of --output files, but no --output was given; add --output PATH"
        )

    outputs = []
    for path in paths:
        _check_folder(Path(path), "--output")
        if format_name is not None:
            outputs.append(formats[format_name][0](path))
            continue
        try:
            outputs.append(from_path(path))
        except ValueError:
            suffixes = " ".join(
                s
                for output_type, _ in formats.values()
                for s in output_type.suffixes
            )
            raise UsageError(
                f"cannot tell the format of output {path!r} from its suffix; name it with one of "
                f"{suffixes}, or pass --format with one of {', '.join(formats)}"
            ) from None
    csv_outputs = [output for output in outputs if isinstance(output, Csv)]
    if csv_extra != "error" and not csv_outputs:
        raise UsageError(
            f"--csv-extra {csv_extra} applies to CSV outputs, but no --output is a CSV file; "
            "add --output PATH.csv or drop --csv-extra"
        )
    for output in csv_outputs:
        output.extra = csv_extra
    return outputs


def _check_distinct_paths(arguments: argparse.Namespace) -> None:
    """Raise ``UsageError`` if a file the run writes is also an input or another written file."""
    named = [("input", path) for path in arguments.inputs if str(path) != "-"]
    named += [("--output", path) for path in arguments.output]
    for option in ("--checkpoint", "--summary"):
        path = getattr(arguments, option[2:])
        if path is not None:
            named.append((option, path))

    seen: dict[Path, tuple[str, str]] = {}
    for option, path in named:
        key = Path(path).resolve()
        first = seen.setdefault(key, (option, str(path)))
        if first == (option, str(path)) or (option == "input" and first[0] == "input"):
            # Reading one file twice is allowed.
            continue
        raise UsageError(
            f"{option} {str(path)!r} is the same file as {first[0]} {first[1]!r}, which the run would "
            "overwrite; give each output, checkpoint and summary a path of its own"
        )


def _check_folder(path: Path, option: str) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(
            f"the folder {str(folder)!r} of {option} {str(path)!r} does not exist; create it "
            f"(mkdir -p {folder}) or pass another path"
        )
    if path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a folder; pass a file path")


def format_summary(summary: RunSummary) -> str:
    """Return the run summary as a short table for standard error."""
    rows = [
        ("ok", str(summary.counts.get("ok", 0))),
        ("failed", str(summary.counts.get("failed", 0))),
        ("resumed", str(summary.counts.get("resumed", 0))),
        ("elapsed", f"{summary.elapsed:.1f} s"),
        ("peak memory", format_bytes(summary.peak_memory)),
    ]
    outputs = [_describe_output(summary, path) for path in summary.outputs] or ["none"]
    rows += [("outputs" if i == 0 else "", path) for i, path in enumerate(outputs)]
    if summary.checkpoint is not None:
        rows.append(("checkpoint", str(summary.checkpoint)))
    for failure in summary.failures[:_FAILURES_SHOWN]:
        error = (
            f"{failure.error.type}: {failure.error.message}"
            if failure.error
            else "unknown error"
        )
        rows.append(("failure", f"job {failure.job_id} ({failure.key}): {error}"))
    return "\n".join(f"{label:<12} {value}" for label, value in rows)


def _describe_output(summary: RunSummary, path: Path) -> str:
    """Return the output path, with the rows it rejected to the dead letters if any."""
    rejected = summary.rejected_rows.get(str(path), 0)
    if rejected == 0:
        return str(path)
    return f"{path} ({rejected} rows rejected to the dead letters)"


def _write_summary(
    path: Path, summary: RunSummary, result: Any, arguments: argparse.Namespace
) -> None:
    data = {
        "function": arguments.function,
        "strategy": arguments.strategy,
        "result": orjson.loads(_to_json(result)),
        **summary.to_dict(),
    }
    # Written beside the target and renamed, so a reader never sees half a file.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(partial, path)


def _to_json(value: Any) -> bytes:
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    try:
        return orjson.dumps(value, default=json_default, option=options)
    except TypeError:
        # The result is printed either way; a value JSON cannot hold becomes its repr.
        return orjson.dumps(repr(value))


def _report_stop(reason: str, checkpoint: Path | None) -> None:
    if checkpoint is None:
        print(
            f"syncagg run: {reason}; no --checkpoint was given, so the run starts over next time",
            file=sys.stderr,
        )
    elif not checkpoint.exists():
        print(
            f"syncagg run: {reason} before the first checkpoint; {checkpoint} was not written, "
            "so the same command starts over",
            file=sys.stderr,
        )
    else:
        print(
            f"syncagg run: {reason}; {checkpoint} contains the jobs done so far, so running the same command resumes",
            file=sys.stderr,
        )


def _inspect(arguments: argparse.Namespace) -> int:
    report = describe_checkpoint(arguments.checkpoint)
    if arguments.json:
        sys.stdout.buffer.write(
            orjson.dumps(report, default=json_default, option=orjson.OPT_INDENT_2)
            + b"\n"
        )
    else:
        print(format_report(report))
    return EXIT_OK


def _formats(arguments: argparse.Namespace) -> int:
    print("output formats (--output picks one by the suffix, --format NAME sets it):")
    for name, (output_type, text) in _output_formats().items():
        print(f"  {name:<8} {' '.join(output_type.suffixes):<18} {text}")
    print("input formats (INPUT picks one by the suffix, --input-format NAME sets it):")
    for name, (suffixes, text) in INPUT_FORMATS.items():
        print(f"  {name:<8} {' '.join(suffixes):<18} {text}")
    return EXIT_OK


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.INFO
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.WARNING
    # While a progress bar is shown, syncagg.progress swaps this handler's
    # stream for one that writes through tqdm.write, above the bar.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    root = logging.getLogger("syncagg")
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The command owns this logger's output; a handler the user's module set
    # on the root logger would print every line twice.
    root.propagate = False


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, got {text!r}"
        )
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of 0 or more, got {text!r}"
        )
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, got {text!r}"
        )
    return value


def _memory_size(text: str) -> int:
    try:
        return parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            str(exc).replace("max_memory", "the size")
        ) from None
