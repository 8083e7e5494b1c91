"""The shared part of text formats that append bytes to one file: JSON Lines, JSON, CSV.

The file is written under a hidden ``.<name>.partial`` name beside the
final path, or under the final path itself with ``live=True``. A commit
flushes and fsyncs it and records the byte offset, and a resume cuts the
file back to that offset, so a half-written line never survives a crash.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

from syncagg.outputs.base import Output, partial_path
from syncagg.outputs.files import reopen_at

__all__ = ["AppendOutput"]


class AppendOutput(Output):
    """An output that appends encoded rows to one file; subclasses encode the rows."""

    _file: BinaryIO | None = None

    @property
    def writing_path(self) -> Path:
        """The file the rows go to while the run goes on."""
        return self.path if self.live else partial_path(self.path)

    def _open_file(self, offset: int | None) -> BinaryIO:
        """Create the file, or reopen it cut back to ``offset`` bytes."""
        if offset is None:
            self._file = open(self.writing_path, "wb")  # noqa: SIM115 - closed in seal/close
        else:
            self._file = reopen_at(self.writing_path, offset)
        return self._file

    def _append(self, data: bytes) -> None:
        assert self._file is not None, "write before open"
        self._file.write(data)

    def commit(self) -> int:
        """Flush and fsync the file and return its size in bytes."""
        assert self._file is not None, "commit before open"
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def seal(self) -> None:
        self.check_target()
        self._write_ending()
        self.commit()
        self._close_file()

    def _write_ending(self) -> None:
        """Append what the format needs after the last row, such as a closing bracket."""

    def close(self) -> None:
        self._close_file()

    def discard(self) -> None:
        self._close_file()
        for path in self.hidden_paths():
            path.unlink(missing_ok=True)

    def _close_file(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            # A failed flush (a full disk) was already reported by the write
            # or commit that hit it, and a resume cuts the file back.
            with contextlib.suppress(OSError):
                file.close()
