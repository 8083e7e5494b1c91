"""The base class of output formats, and how a format is chosen from a path."""

from __future__ import annotations

import abc
import base64
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Output", "from_path", "json_default", "partial_path"]


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
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        # orjson encodes only C-contiguous arrays of some dtypes itself, so
        # slices, transposes and object arrays arrive here.
        return value.tolist()
    raise TypeError(f"cannot encode a value of type {type(value).__qualname__} as JSON")


class Output(abc.ABC):
    """A file that receives one row per successful job.

    A row is the job's value when it is a mapping, and ``{"value": value}``
    otherwise. Every method except the constructor runs in the output's
    writer thread, so an implementation needs no locking.

    The lifecycle is ``open``, any number of ``write`` and ``commit`` calls,
    then ``finish`` (the file appears under its final name), ``close`` (the
    partial state stays for a resume) or ``discard`` (it is removed). A file
    never appears under its final name before ``finish``.
    """

    format: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @abc.abstractmethod
    def open(self, position: Any | None) -> None:
        """Start a new file, or resume at a position that ``commit`` returned.

        Raises ``CheckpointError`` if the partial file of a resumed run is
        missing or shorter than the position.
        """

    @abc.abstractmethod
    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append rows. They may stay buffered until the next ``commit``."""

    @abc.abstractmethod
    def commit(self) -> Any:
        """Make every row written so far durable and return the position.

        The position is small, picklable data. After a crash, ``open`` with
        this position cuts the file back to exactly these rows.
        """

    @abc.abstractmethod
    def finish(self) -> None:
        """Commit, close, and move the file to its final name."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file handles and keep the partial file for a resume."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Close and remove the partial file; the final name is left untouched."""

    def settings(self) -> dict[str, Any]:
        """Return the settings that change the file's content, for the run's fingerprint."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Return the format, path and settings of this output."""
        return {"format": self.format, "path": str(self.path), **self.settings()}


def from_path(path: str | os.PathLike[str]) -> Output:
    """Return the output whose format matches the suffix of ``path``."""
    from syncagg.outputs.csvfile import Csv
    from syncagg.outputs.jsonlines import JsonLines
    from syncagg.outputs.parquet import Parquet

    formats: list[type[Output]] = [JsonLines, Csv, Parquet]
    suffix = Path(path).suffix.lower()
    for output_type in formats:
        if suffix in output_type.suffixes:
            return output_type(path)

    known = ", ".join(s for output_type in formats for s in output_type.suffixes)
    raise ValueError(
        f"cannot choose an output format for {os.fspath(path)!r} from its suffix "
        f"{suffix!r}; use one of {known}, or pass an output object such as "
        "syncagg.Parquet(path)"
    )
