"""Reading a live run's checkpoint from a test without locking it."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path


def done_jobs(checkpoint: Path) -> int:
    """Count the jobs a checkpoint records as done; 0 before the first checkpoint.

    The file is opened read-only through sqlite3, because a second sqlitedict
    connection would set the journal mode and could block the running writer.
    """
    if not checkpoint.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{checkpoint}?mode=ro", uri=True, timeout=1)
        try:
            row = db.execute("SELECT value FROM syncagg WHERE key = 'done'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    if row is None:
        return 0
    return sum(stop - start for start, stop in pickle.loads(row[0]))
