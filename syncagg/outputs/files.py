"""File operations shared by the formats: durable writes and atomic renames."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from syncagg.errors import CheckpointError

__all__ = ["fsync_directory", "fsync_file", "publish", "reopen_at"]


def fsync_directory(path: Path) -> None:
    """Flush a directory entry, so a rename inside it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def publish(source: Path, target: Path) -> None:
    """Rename a finished file to its final name atomically."""
    os.replace(source, target)
    fsync_directory(target.parent)


def reopen_at(path: Path, position: int) -> BinaryIO:
    """Open a partial file of a resumed run and cut it back to ``position`` bytes."""
    try:
        file = open(path, "r+b")  # noqa: SIM115 - the caller owns the handle
    except FileNotFoundError:
        raise CheckpointError(
            f"cannot resume: the partial file {str(path)!r} that the checkpoint "
            "refers to is missing; delete the checkpoint file to start afresh"
        ) from None

    size = os.fstat(file.fileno()).st_size
    if size < position:
        file.close()
        raise CheckpointError(
            f"cannot resume: {str(path)!r} has {size} bytes but the checkpoint "
            f"recorded {position}; delete the checkpoint file to start afresh"
        )
    file.truncate(position)
    file.seek(position)
    return file
