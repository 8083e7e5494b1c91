"""Checkpoints in an SQLite file through sqlitedict.

Only the parent writes a checkpoint, from the collector thread, after every
writer has committed its file up to the same point. One SQLite transaction
then stores the done jobs (as ranges), the strategy's state, every writer's
position and the counts, so a resume restores exactly that cut: a job is
either in all of them or in none.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict

from syncagg.errors import CheckpointError, CheckpointMismatchError
from syncagg.jobranges import JobRanges
from syncagg.records import JobResult

__all__ = ["Checkpoint", "CheckpointState"]

logger = logging.getLogger("syncagg.checkpoint")

FORMAT_VERSION = 1
_TABLE = "syncagg"
_BUSY_TIMEOUT = 10.0


@dataclass
class CheckpointState:
    """Everything a resumed run restores."""

    status: str = "running"
    done: JobRanges = field(default_factory=JobRanges)
    strategy: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[JobResult] = field(default_factory=list)
    updated: float = 0.0


class Checkpoint:
    """The checkpoint file of one run configuration.

    Parameters
    ----------
    path : str or os.PathLike
        The SQLite file; created readable and writable by the owner only.
    fingerprint : dict
        What identifies the run's configuration. A file written with another
        fingerprint raises ``CheckpointMismatchError`` when loaded.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._check_file()
        try:
            self._db = SqliteDict(
                str(self.path),
                tablename=_TABLE,
                autocommit=False,
                journal_mode="WAL",
                timeout=_BUSY_TIMEOUT,
                outer_stack=False,
            )
        except Exception as exc:
            raise CheckpointError(f"cannot open checkpoint {str(self.path)!r}: {exc}") from exc

    def _check_file(self) -> None:
        if not self.path.parent.is_dir():
            raise CheckpointError(
                f"cannot create checkpoint {str(self.path)!r}: the folder "
                f"{str(self.path.parent)!r} does not exist; create it first"
            )
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            return
        if self.path.stat().st_size == 0:
            return

        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                tables = {row[0] for row in rows}
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(
                f"{str(self.path)!r} is not a readable checkpoint ({exc}); pass the path "
                "of a syncagg checkpoint, or a new path to start afresh"
            ) from None
        if _TABLE not in tables:
            raise CheckpointError(
                f"{str(self.path)!r} is an SQLite file but not a syncagg checkpoint "
                f"(it has no table {_TABLE!r}); pass a new path to start afresh"
            )

    def load(self) -> CheckpointState | None:
        """Return the stored state, or ``None`` for a new file.

        Raises ``CheckpointMismatchError`` if the file belongs to another
        configuration and ``CheckpointError`` if it cannot be read.
        """
        try:
            if "fingerprint" not in self._db:
                return None
            stored = dict(self._db.items())
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {str(self.path)!r}: {exc}") from exc

        if stored.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} has format version "
                f"{stored.get('format_version')!r}, this syncagg reads {FORMAT_VERSION}; "
                "finish the run with the syncagg version that started it, or start afresh"
            )
        self._check_fingerprint(stored["fingerprint"])
        return CheckpointState(
            status=stored["status"],
            done=JobRanges.from_ranges(stored["done"]),
            strategy=stored["strategy"],
            outputs=stored["outputs"],
            counts=stored["counts"],
            failures=stored["failures"],
            updated=stored["updated"],
        )

    def _check_fingerprint(self, stored: dict[str, Any]) -> None:
        differences = [
            f"{key}: checkpoint has {stored.get(key)!r}, this run has {self.fingerprint.get(key)!r}"
            for key in sorted(set(stored) | set(self.fingerprint))
            if stored.get(key) != self.fingerprint.get(key)
        ]
        if differences:
            raise CheckpointMismatchError(
                f"checkpoint {str(self.path)!r} was written by a run with another "
                f"configuration ({'; '.join(differences)}); run with the same settings "
                "to resume, or delete the file to start afresh"
            )

    def save(self, state: CheckpointState) -> None:
        """Store ``state`` in one transaction; raise ``CheckpointError`` on failure."""
        state.updated = time.time()
        values = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "status": state.status,
            "done": state.done.to_ranges(),
            "strategy": state.strategy,
            "outputs": state.outputs,
            "counts": state.counts,
            "failures": state.failures,
            "updated": state.updated,
        }
        try:
            for key, value in values.items():
                self._db[key] = value
            self._db.commit(blocking=True)
        except Exception as exc:
            raise CheckpointError(f"writing checkpoint {str(self.path)!r} failed: {exc}") from exc
        logger.info(
            "checkpoint %s: %d jobs done, status %s", self.path, len(state.done), state.status
        )

    def close(self) -> None:
        """Close the file; idempotent."""
        try:
            self._db.close()
        except Exception:
            logger.exception("closing checkpoint %s failed", self.path)
