"""Checkpoints in an SQLite file through sqlitedict.

Only the parent writes a checkpoint, from the collector thread, after every
writer has committed its file up to the same point. One SQLite transaction
then stores the done jobs (as ranges), the strategy's state, every writer's
position and the counts, so a resume restores exactly that cut: a job is
either in all of them or in none.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from sqlitedict import SqliteDict, decode

from syncagg.errors import CheckpointError, CheckpointMismatchError
from syncagg.jobranges import JobRanges
from syncagg.records import JobResult
from syncagg.settings import inputs_in_words

__all__ = ["Checkpoint", "CheckpointState"]

logger = logging.getLogger("syncagg.checkpoint")

FORMAT_VERSION = 1
_KEYS = ("status", "done", "strategy", "outputs", "counts", "failures", "updated")
_TABLE = "syncagg"
_BUSY_TIMEOUT = 10.0
# A commit that takes longer than this is reported as failed: sqlitedict's
# thread dies on a failed commit and its caller would otherwise wait forever.
_COMMIT_TIMEOUT = 60.0

# The lock descriptors of this process's open checkpoints. A forked child
# inherits them and would keep the lock after its parent is killed, so the
# next run could not open the checkpoint until every orphaned worker exits.
# The child closes its copies at once; the parent's copy keeps the lock.
_LOCK_FDS: set[int] = set()


def _close_locks_in_child() -> None:
    for fd in _LOCK_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_locks_in_child)


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
        self._lock = self._lock_file()
        try:
            self._db = SqliteDict(
                str(self.path),
                tablename=_TABLE,
                autocommit=False,
                journal_mode="WAL",
                timeout=_BUSY_TIMEOUT,
                outer_stack=False,
            )
            # sqlitedict turns synchronous off; a power loss could then corrupt the file.
            self._db.conn.execute("PRAGMA synchronous=FULL")
        except Exception as exc:
            self._unlock()
            raise CheckpointError(f"cannot open checkpoint {str(self.path)!r}: {exc}") from exc

    def _lock_file(self) -> int:
        """Take an exclusive lock so that two runs never share one checkpoint.

        ``flock`` locks are apart from the ``fcntl`` locks SQLite takes itself,
        and the kernel drops them when a killed process's descriptors close.
        """
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} is in use by another running process; "
                "wait for that run to end, or pass another checkpoint path"
            ) from None
        _LOCK_FDS.add(fd)
        return fd

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
            db = self._connect_read_only()
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
            stored = self._read_all()
        except Exception as exc:
            raise CheckpointError(
                f"cannot read checkpoint {str(self.path)!r} "
                f"({type(exc).__name__}: {exc}); the file is damaged, so delete it "
                "to start afresh"
            ) from exc
        if "fingerprint" not in stored:
            return None

        if stored.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} has format version "
                f"{stored.get('format_version')!r}, this syncagg reads {FORMAT_VERSION}; "
                "finish the run with the syncagg version that started it, or start afresh"
            )
        self._check_kind(stored, "fingerprint", dict, "a dict")
        self._check_fingerprint(stored["fingerprint"])
        missing = sorted(set(_KEYS) - set(stored))
        if missing:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} lacks {', '.join(missing)}; the file is "
                "damaged, so delete it to start afresh"
            )
        return self._state(stored)

    def _state(self, stored: dict[str, Any]) -> CheckpointState:
        """Build the state from stored values, checking the type of each."""
        self._check_kind(stored, "status", str, "a str")
        self._check_kind(stored, "outputs", dict, "a dict")
        self._check_kind(stored, "counts", dict, "a dict")
        self._check_kind(stored, "failures", list, "a list")
        self._check_kind(stored, "updated", (int, float), "a number")
        if not all(isinstance(count, int) for count in stored["counts"].values()):
            self._damaged("counts", stored["counts"], "a dict of ints")
        if not all(isinstance(failure, JobResult) for failure in stored["failures"]):
            self._damaged("failures", stored["failures"], "a list of JobResult")
        try:
            done = JobRanges.from_ranges(stored["done"])
        except (TypeError, ValueError):
            self._damaged("done", stored["done"], "a list of (start, stop) pairs of ints")
        return CheckpointState(
            status=stored["status"],
            done=done,
            strategy=stored["strategy"],
            outputs=stored["outputs"],
            counts=stored["counts"],
            failures=stored["failures"],
            updated=float(stored["updated"]),
        )

    def _check_kind(self, stored: dict[str, Any], key: str, kind: type | tuple[type, ...], expected: str) -> None:
        if not isinstance(stored[key], kind):
            self._damaged(key, stored[key], expected)

    def _damaged(self, key: str, value: Any, expected: str) -> NoReturn:
        raise CheckpointError(
            f"checkpoint {str(self.path)!r} has {key}={_short(value)} of type "
            f"{type(value).__qualname__}, expected {expected}; the file is damaged or was "
            "edited by hand, so delete it to start afresh"
        )

    def _connect_read_only(self) -> sqlite3.Connection:
        # The URI is built from the percent-encoded path, so that "?" or "#"
        # in a file name does not start the URI's query.
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT)

    def _read_all(self) -> dict[str, Any]:
        """Read every stored key and value through a connection of this thread.

        sqlitedict 2.1 reads in its own thread. That thread dies without a
        response when fetching rows from a corrupt page fails, so a read
        through it would wait forever.
        """
        db = self._connect_read_only()
        try:
            rows = db.execute(f'SELECT key, value FROM "{_TABLE}"').fetchall()
        finally:
            db.close()
        return {key: decode(value) for key, value in rows}

    def _check_fingerprint(self, stored: dict[str, Any]) -> None:
        differences = [
            f"{key}: checkpoint has {_shown(key, stored.get(key))}, this run has {_shown(key, self.fingerprint.get(key))}"
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
            self._commit()
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"writing checkpoint {str(self.path)!r} failed: {exc}") from exc
        logger.info(
            "checkpoint %s: %d jobs done, status %s", self.path, len(state.done), state.status
        )

    def _commit(self) -> None:
        """Commit through sqlitedict's thread, waiting at most ``_COMMIT_TIMEOUT`` seconds."""
        errors: list[BaseException] = []
        done = threading.Event()

        def commit() -> None:
            try:
                self._db.commit(blocking=True)
            except BaseException as exc:  # noqa: BLE001 - raised again below
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=commit, name="syncagg-checkpoint-commit", daemon=True)
        thread.start()
        deadline = time.monotonic() + _COMMIT_TIMEOUT
        while not done.wait(0.1):
            if not self._db.conn.is_alive() or time.monotonic() > deadline:
                cause = self._db.conn.exception
                reason = cause[1] if cause else f"no answer within {_COMMIT_TIMEOUT:.0f} s"
                raise CheckpointError(f"committing checkpoint {str(self.path)!r} failed: {reason}")
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Close the file and release the run's lock; idempotent."""
        if self._lock < 0:
            return
        try:
            # After a failed commit sqlitedict's thread is gone, so a normal
            # close would wait forever for its response.
            self._db.close(force=not self._db.conn.is_alive())
        except Exception:
            logger.exception("closing checkpoint %s failed", self.path)
        self._unlock()

    def _unlock(self) -> None:
        _LOCK_FDS.discard(self._lock)
        os.close(self._lock)
        self._lock = -1


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shown(key: str, value: Any) -> str:
    """Return a fingerprint value as a mismatch message shows it."""
    if key == "inputs" and value is not None:
        return inputs_in_words(value)
    return repr(value)
