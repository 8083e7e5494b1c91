"""The base class of output formats, and the helpers that every format shares."""

from __future__ import annotations

import abc
import base64
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from syncagg.outputs.files import publish

__all__ = [
    "INVALID_POLICIES",
    "Output",
    "RejectedRow",
    "RowError",
    "from_path",
    "json_default",
    "partial_path",
]

INVALID_POLICIES = ("error", "dead_letter")


def partial_path(path: Path, suffix: str = ".partial") -> Path:
    """Return the hidden name beside ``path`` that holds it while it is written."""
    return path.with_name(f".{path.name}{suffix}")


def json_default(value: Any) -> Any:
    """Convert what orjson does not encode natively, or raise ``TypeError``."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        # orjson encodes only C-contiguous arrays of some dtypes itself, so
        # slices, transposes and object arrays arrive here.
        plain = value.tolist()
        if type(plain).__module__ == "numpy":
            # numpy.longdouble and the like have no Python type to become.
            raise TypeError(
                f"cannot encode a numpy {type(plain).__name__} as JSON, which has no Python type "
                "of the same precision; convert it with float(value) in the job function"
            )
        return plain
    raise TypeError(
        f"cannot encode a value of type {type(value).__qualname__} as JSON; return "
        "str, int, float, bool, None, dict, list, datetime, date, Decimal, bytes "
        "or numpy values, or convert it with str(value) in the job function"
    )


class RowError(ValueError):
    """A row that an output cannot store, with the reason."""


@dataclass(frozen=True)
class RejectedRow:
    """A row that an output rejected, and why.

    Attributes
    ----------
    index : int
        Position of the row in the rows or table of that ``write`` call.
    row : dict
        The row as the output received it.
    reason : str
        What does not fit, naming the column, the value and the expected type.
    """

    index: int
    row: dict[str, Any]
    reason: str


class Output(abc.ABC):
    """A file that receives one row per successful job.

    A row is the job's value when it is a mapping, each row of the value
    when it is a ``pyarrow.RecordBatch`` or ``pyarrow.Table``, and
    ``{"value": value}`` otherwise. Every method except the constructor runs
    in the output's writer thread, so an implementation needs no locking.

    The lifecycle is ``open``, then any number of ``write`` (or
    ``write_table``) and ``commit`` calls. A run that completes calls
    ``seal``, which writes the complete file under its hidden name, and
    then ``publish``, which renames it to its final name. A run that stops
    calls ``close``, which keeps the partial state for a resume, or
    ``discard``, which removes it. ``finish`` is ``seal`` followed by
    ``publish``. Unless
    ``live`` is set, a file never appears under its final name before
    ``publish``.

    ``checkpointed`` tells whether a checkpoint stores the positions that
    ``commit`` returns. ``Aggregator`` sets it before ``open``, and it is
    True by default. When it is False, a format may skip the work that only
    a resume needs.

    A subclass sets ``format`` (the name users pass), ``suffixes`` (file
    suffixes that choose it, lower case, with the dot) and ``description``
    (one line for ``syncagg formats``), and implements the abstract methods.
    ``seal`` leaves the complete file at ``sealed_path``, which ``publish``
    renames. ``syncagg/outputs/jsonlines.py`` is the shortest example.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name.
    live : bool, default False
        Write under the final name from the start, so other programs can
        follow the file while the run goes on. See each format for what a
        crash leaves behind then.
    invalid : {"error", "dead_letter"}, default "error"
        What to do with a row that the format cannot store, such as a value
        that does not fit the column's type: raise ``RowError`` (the run
        stops with ``OutputError``), or send the row with the reason to the
        run's dead-letter output (``Aggregator(dead_letters=...)``).
    """

    format: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    checkpointed: bool = True

    def __init__(
        self, path: str | os.PathLike[str], *, live: bool = False, invalid: str = "error"
    ) -> None:
        if invalid not in INVALID_POLICIES:
            raise ValueError(f"invalid must be one of {INVALID_POLICIES}, got {invalid!r}")
        self.path = Path(path)
        self.live = bool(live)
        self.invalid = invalid
        self._rejected: list[RejectedRow] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def sealed_path(self) -> Path:
        """Where ``seal`` leaves the complete file: the final name when ``live``."""
        return self.path if self.live else partial_path(self.path)

    def hidden_paths(self) -> list[Path]:
        """Return the hidden files and folders this output may leave beside its path."""
        return [partial_path(self.path)]

    def is_published(self) -> bool:
        """Return whether an earlier run already renamed the complete file to its final name."""
        if self.live:
            # The final name exists from the start, so it proves nothing.
            return False
        hidden = any(path.exists() for path in self.hidden_paths())
        return self.path.exists() and not hidden

    @abc.abstractmethod
    def open(self, position: Any | None) -> None:
        """Start a new file, or resume at a position that ``commit`` returned.

        Raises ``CheckpointError`` if the partial file of a resumed run is
        missing or shorter than the position.
        """

    @abc.abstractmethod
    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append rows. They may stay buffered until the next ``commit``.

        A row that cannot be stored goes through ``reject``.
        """

    def write_table(self, table: Any) -> None:
        """Append the rows of a ``pyarrow.Table`` or ``RecordBatch``.

        The default converts the table to rows; columnar formats override it.
        """
        self.write(table.to_pylist())

    def worker_encoder(self) -> Callable[[Any], Any] | None:
        """Return a picklable function that encodes a table in a worker, or ``None``.

        With ``Aggregator(encode_in_workers=True)``, a job that returns a
        table runs this function on it in the worker, and the writer passes
        the result to ``write_encoded`` along with the table.
        """
        return None

    def write_encoded(self, table: Any, encoded: Any) -> None:
        """Append a table that ``worker_encoder`` encoded; the default ignores ``encoded``."""
        self.write_table(table)

    @abc.abstractmethod
    def commit(self) -> Any:
        """Make every row written so far durable and return the position.

        The position is small, picklable data. After a crash, ``open`` with
        this position cuts the file back to exactly these rows.
        """

    @abc.abstractmethod
    def seal(self) -> None:
        """Commit, close, and leave the complete file at ``sealed_path``.

        After ``seal`` only ``publish``, ``close`` or ``discard`` follow.
        Raises if the final name cannot receive the file (for example, it is
        a folder), so that no output of the run is published.
        """

    def publish(self) -> None:
        """Move the sealed file to its final name and remove the hidden files."""
        if not self.live:
            publish(self.sealed_path, self.path)

    def finish(self) -> None:
        """Seal the file and publish it under its final name."""
        self.seal()
        self.publish()

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file handles and keep the partial file for a resume.

        An implementation must not raise for a file that an earlier call
        left in a failed state, such as a flush that hit a full disk.
        """

    @abc.abstractmethod
    def discard(self) -> None:
        """Close and remove the hidden files; the final name is left untouched."""

    def reject(self, index: int, row: dict[str, Any], reason: str) -> None:
        """Raise ``RowError`` for a row that cannot be stored, or keep it for the dead letters."""
        if self.invalid == "error":
            raise RowError(f"{self.format} output {str(self.path)!r} cannot store a row: {reason}")
        self.keep_rejected(index, row, reason)

    def sends_dead_letters(self) -> bool:
        """Return whether this output may send rejected rows to the run's dead-letter output."""
        return self.invalid == "dead_letter"

    def keep_rejected(self, index: int, row: dict[str, Any], reason: str) -> None:
        """Keep a rejected row for the dead letters, whatever ``invalid`` is set to."""
        self._rejected.append(RejectedRow(index, row, reason))

    def take_rejected(self) -> list[RejectedRow]:
        """Return the rows rejected since the last call and forget them."""
        rejected, self._rejected = self._rejected, []
        return rejected

    def settings(self) -> dict[str, Any]:
        """Return the settings that change the file's content, for the run's fingerprint."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Return the format, path and settings of this output."""
        described = {"format": self.format, "path": str(self.path), **self.settings()}
        # Added only when set, so checkpoints of runs without them still match.
        if self.live:
            described["live"] = True
        if self.invalid != "error":
            described["invalid"] = self.invalid
        return described

    def check_target(self) -> None:
        """Raise ``IsADirectoryError`` if the final name is a folder, before anything is published."""
        if self.path.is_dir():
            raise IsADirectoryError(
                f"the output path {str(self.path)!r} is a folder; remove it or choose another path"
            )


def from_path(path: str | os.PathLike[str]) -> Output:
    """Return the output whose format matches the suffix of ``path``.

    Built-in formats and those of installed plugins (the ``syncagg.formats``
    entry point group) take part; see ``syncagg.outputs.registry``.
    """
    from syncagg.outputs.registry import output_for_path

    return output_for_path(path)
