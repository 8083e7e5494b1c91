"""Checks and conversions of the settings that ``Aggregator`` receives.

Each raises ``ValueError`` or ``TypeError`` with the setting's name, the
value given and what is expected, so that a wrong setting fails when the
aggregator is built, not in the middle of a run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from syncagg.dask_source import cluster_threads, dask_client
from syncagg.errors import OutputError
from syncagg.outputs.base import Output, from_path

__all__ = [
    "as_executor",
    "as_output",
    "check_dead_letter_outputs",
    "check_distinct",
    "check_folder",
    "default_workers",
    "describe_inputs",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "usable_cpus",
]


def check_folder(output: Output) -> None:
    folder = output.path.parent
    if not folder.is_dir():
        raise OutputError(
            f"cannot write {str(output.path)!r}: the folder {str(folder)!r} does not exist; "
            f"create it first (mkdir -p {folder})"
        )


def describe_inputs(inputs: Iterable[Any]) -> str:
    """Describe the inputs for the fingerprint: a range in full, a sized collection by length."""
    if isinstance(inputs, range):
        return repr(inputs)
    kind = type(inputs).__qualname__
    if hasattr(inputs, "__len__"):
        return f"{kind} of {len(inputs)} items"  # type: ignore[arg-type]
    return kind


# The command line's inputs (cli_inputs.py), by class name, in words.
_INPUT_WORDS = {
    "InputFiles": "rows of the input files",
    "WithStdin": "rows of standard input and the input files",
}
# describe_inputs writes sized inputs as "TYPE of N items", and ranges in full.
_SIZED = re.compile(r"(.*) of (\d+) items")
_RANGE = re.compile(r"range\((-?\d+), (-?\d+)(?:, (-?\d+))?\)")


def input_count(described: Any) -> int | None:
    """Return the number of inputs that a description from ``describe_inputs`` gives, else ``None``."""
    if not isinstance(described, str):
        return None
    sized = _SIZED.fullmatch(described)
    if sized:
        return int(sized.group(2))
    span = _RANGE.fullmatch(described)
    if span:
        start, stop, step = span.groups()
        return len(range(int(start), int(stop), int(step or 1)))
    return None


def inputs_in_words(described: Any) -> str:
    """Return a description from ``describe_inputs`` in words, without class names where possible."""
    if not isinstance(described, str):
        return "unknown inputs"
    if _RANGE.fullmatch(described):
        return described
    sized = _SIZED.fullmatch(described)
    kind = sized.group(1) if sized else described
    words = _INPUT_WORDS.get(kind)
    if sized and words:
        return f"{sized.group(2)} {words}"
    if sized:
        return f"{sized.group(2)} inputs ({kind})"
    if words:
        return words
    return f"an unknown number of inputs ({kind})"


def as_executor(executor: Any) -> Executor | None:
    if executor is None or isinstance(executor, Executor):
        return executor
    get_executor = getattr(executor, "get_executor", None)
    if callable(get_executor):
        # A dask.distributed Client: its executor returns concurrent.futures.Future.
        return get_executor()  # type: ignore[no-any-return]
    raise TypeError(
        f"executor must be a concurrent.futures.Executor or a dask.distributed.Client, "
        f"got {executor!r} of type {type(executor).__qualname__}"
    )


def as_output(output: Output | str | os.PathLike[str]) -> Output:
    if isinstance(output, Output):
        return output
    if isinstance(output, (str, os.PathLike)):
        return from_path(output)
    raise TypeError(
        f"outputs must contain syncagg outputs or paths, got {output!r} of type {type(output).__qualname__}"
    )


def check_dead_letter_outputs(outputs: list[Output], dead_letters: Output | None) -> None:
    if dead_letters is not None:
        return
    for output in outputs:
        if output.sends_dead_letters():
            raise ValueError(
                f"output {str(output.path)!r} sends rejected rows to the dead letters, but "
                "there is no dead-letter output; pass Aggregator(dead_letters=PATH)"
            )


def check_distinct(outputs: list[Output]) -> None:
    seen: set[Path] = set()
    for output in outputs:
        path = output.path.resolve()
        if path in seen:
            raise ValueError(f"two outputs write to {str(output.path)!r}; give each output its own path")
        seen.add(path)


def default_workers(executor: Executor | None) -> int:
    if executor is None:
        return usable_cpus()
    client = dask_client(executor)
    if client is not None:
        # The cluster's threads, not this machine's CPUs: the jobs run there.
        return cluster_threads(client)
    return getattr(executor, "_max_workers", None) or usable_cpus()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int of 0 or more, got {value!r}")
    return value


def positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)

