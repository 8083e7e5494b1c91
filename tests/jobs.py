"""Functions that tests run in worker processes.

They live in a module of their own so that every start method, spawn
included, can import them by name in a worker.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from syncagg.combiners import Combiner


def square(x: int) -> dict[str, int]:
    """Return a small row for ``x``."""
    return {"x": x, "square": x * x}


def fail_on_multiples_of_seven(x: int) -> dict[str, int]:
    """Return ``square(x)``, but raise ``ValueError`` when ``x`` is a multiple of 7."""
    if x % 7 == 0:
        raise ValueError(f"{x} is a multiple of 7")
    return square(x)


def always_fail(x: Any) -> None:
    """Raise ``RuntimeError`` for every input."""
    raise RuntimeError(f"cannot handle {x!r}")


def sleepy_square(x: int) -> dict[str, int]:
    """Return ``square(x)`` after sleeping 5 ms, so a run lasts long enough to be killed."""
    time.sleep(0.005)
    return square(x)


def kill_self_on_13(x: int) -> dict[str, int]:
    """SIGKILL the worker on input 13, as the OOM killer would."""
    if x == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return square(x)


def vector(x: int) -> np.ndarray:
    """Return a float64 array of 1000 copies of ``x``."""
    return np.full(1000, float(x))


def big_bytes(size: int) -> bytes:
    """Return ``size`` bytes whose content depends on ``size``."""
    return bytes([size % 251]) * size


def add_square(total: int, row: dict[str, int]) -> int:
    """Add a row's square to a running total."""
    return total + row["square"]


def mark_started(item: tuple[str, int]) -> bytes:
    """Create a file named after the job in a folder, then return 200 kB."""
    folder, x = item
    Path(folder, str(x)).touch()
    return bytes(200_000)


def parity_counter(x: int) -> Counter[str]:
    """Return a Counter with one count for the parity of ``x``."""
    return Counter(["even" if x % 2 == 0 else "odd"])


STRIPED_LENGTH = 4 * 1024 * 1024 // 8


def striped_array(x: int) -> np.ndarray:
    """Return 4 MiB of int64 whose every element encodes ``x`` and its own position."""
    return np.arange(STRIPED_LENGTH, dtype=np.int64) * 1000 + x


def touch_and_square(item: tuple[str, int]) -> dict[str, int]:
    """Create a file named after ``x`` in a folder, then return ``square(x)``."""
    folder, x = item
    Path(folder, str(x)).touch()
    return square(x)


def worker_pid(x: int) -> int:
    """Return the pid of the process that runs the job."""
    return os.getpid()


class SquareSumAndPids(Combiner):
    """Sum ``row["square"]`` and collect the pids of the processes that fold rows.

    The pids show whether rows were folded in the workers or in the collector.
    """

    def create(self) -> tuple[int, frozenset[int]]:
        return (0, frozenset())

    def add(self, accumulator: tuple[int, frozenset[int]], value: dict[str, int]) -> tuple[int, frozenset[int]]:
        total, pids = accumulator
        return (total + value["square"], pids | {os.getpid()})

    def merge(
        self, left: tuple[int, frozenset[int]], right: tuple[int, frozenset[int]]
    ) -> tuple[int, frozenset[int]]:
        return (left[0] + right[0], left[1] | right[1])

    def extract(self, accumulator: tuple[int, frozenset[int]]) -> tuple[int, frozenset[int]]:
        return accumulator


class EscapingError(BaseException):
    """A ``BaseException`` that ``run_chunk`` lets through, so the executor's whole task fails."""


def escape_on_5(x: int) -> dict[str, int]:
    """Return ``square(x)``, but raise ``EscapingError`` on input 5."""
    if x == 5:
        raise EscapingError(f"{x} escapes run_chunk")
    return square(x)


def mark_and_sleep(item: tuple[str, int]) -> dict[str, int]:
    """Create a file named after the job in a folder, sleep 0.3 s, return the number."""
    folder, x = item
    Path(folder, str(x)).touch()
    time.sleep(0.3)
    return {"x": x}


def _refuse_to_load() -> None:
    raise ValueError("this input cannot be rebuilt in a worker")


class Unloadable:
    """An input that pickles in the parent and fails to unpickle in a worker."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_refuse_to_load, ())


def identity(x: Any) -> Any:
    """Return the input unchanged."""
    return x


def unloadable_on_3(x: int) -> Any:
    """Return ``x``, except an object that cannot be unpickled for input 3."""
    return Unloadable() if x == 3 else x


def _fork_sleeper(folder: str) -> None:
    """Fork a child that sleeps for 5 minutes, and record its pid in ``folder/grandchild``."""
    child = os.fork()
    if child == 0:
        time.sleep(300)
        os._exit(0)
    Path(folder, "grandchild").write_text(str(child))


def fork_then_die(item: tuple[str, int]) -> int:
    """On input 3, fork a child that sleeps and record its pid, then SIGKILL the worker."""
    folder, x = item
    if x == 3:
        _fork_sleeper(folder)
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def fork_and_return(item: tuple[str, int]) -> int:
    """On input 3, fork a child that sleeps and record its pid; return the input."""
    folder, x = item
    if x == 3:
        _fork_sleeper(folder)
    return x


def signal_masks(_: Any) -> dict[str, int]:
    """Return this process's blocked and ignored signal masks from /proc."""
    fields = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":\t" in line)
    return {"blocked": int(fields["SigBlk"], 16), "ignored": int(fields["SigIgn"], 16)}


def stuck_from_20(item: tuple[str, int]) -> dict[str, int]:
    """Mark the job started; jobs 20 and up then sleep 60 s unless SYNCAGG_TEST_FAST is set."""
    folder, x = item
    Path(folder, str(x)).touch()
    if x >= 20 and "SYNCAGG_TEST_FAST" not in os.environ:
        time.sleep(60)
    return {"x": x}


def orphan_segment_then_die(x: int) -> int:
    """On input 3, create a segment named as this worker's next one-off segment, then SIGKILL the worker.

    This leaves what a worker killed while writing an oversized result
    leaves: a segment it never announced.
    """
    if x == 3:
        ring = next(Path("/dev/shm").glob(f"syncagg-{os.getppid()}-*-ring"))
        prefix = ring.name[: -len("ring")]
        segment = shared_memory.SharedMemory(f"{prefix}w{os.getpid()}-99", create=True, size=4096)
        segment.close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x


class ExitOnLoad:
    """A result that pickles, and whose unpickling calls sys.exit."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (sys.exit, (7,))


def exit_on_load_on_3(x: int) -> Any:
    """Return ``x``, except for input 3 a value whose unpickling raises SystemExit."""
    return ExitOnLoad() if x == 3 else x


class BrokenStr(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text")


def broken_str_on_2(x: int) -> int:
    """Return ``x``, except raise ``BrokenStr`` for input 2."""
    if x == 2:
        raise BrokenStr()
    return x


def nested_lists(depth: int) -> dict[str, Any]:
    """Return a dict whose value is a list nested ``depth`` deep."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return {"v": value}
