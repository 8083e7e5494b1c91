"""``syncagg inspect``: read a checkpoint without disturbing the run that writes it.

The file is opened read-only through the ``sqlite3`` module, not through
``Checkpoint``, which takes an exclusive lock. The checkpoint is in WAL
mode, where a reader neither blocks the writer nor waits for it, and each
value is one pickled row of the ``syncagg`` table (sqlitedict's layout).

Unpickling runs code named in the file, so inspect only checkpoints you
trust; syncagg creates them readable by their owner only.
"""

from __future__ import annotations

import datetime
import pickle
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from syncagg.cli_errors import UsageError
from syncagg.settings import input_count, inputs_in_words

__all__ = ["describe_checkpoint", "format_report"]

_TABLE = "syncagg"
_READ_TIMEOUT = 1.0
_FAILURES_SHOWN = 5


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """Return what a checkpoint records, as JSON-compatible data.

    Raises
    ------
    UsageError
        If the file is missing or is not a syncagg checkpoint.
    """
    stored = _read(path)
    if "fingerprint" not in stored:
        return {
            "checkpoint": str(path),
            "status": "empty",
            "message": "no checkpoint has been written yet",
        }

    fingerprint = stored["fingerprint"]
    counts = stored.get("counts", {})
    done = sum(stop - start for start, stop in stored.get("done", []))
    total = _total(fingerprint.get("inputs"), stored["status"], done)
    return {
        "checkpoint": str(path),
        "status": stored["status"],
        "function": fingerprint.get("function"),
        "strategy": fingerprint.get("strategy"),
        "inputs": fingerprint.get("inputs"),
        "done": done,
        "ok": counts.get("ok", 0),
        "failed": counts.get("failed", 0),
        "total": total,
        "pending": None if total is None else total - done,
        "outputs": _outputs(fingerprint.get("outputs", []), stored.get("outputs", {})),
        "updated": stored.get("updated"),
        "updated_iso": _iso(stored.get("updated")),
        "failures": [_failure(result) for result in stored.get("failures", [])],
    }


def format_report(report: Mapping[str, Any]) -> str:
    """Return the report of ``describe_checkpoint`` as aligned lines of text."""
    if report["status"] == "empty":
        return f"checkpoint       {report['checkpoint']}\nstatus           empty: {report['message']}"

    lines = [
        ("checkpoint", report["checkpoint"]),
        ("status", report["status"]),
        ("function", report["function"]),
        ("strategy", report["strategy"]),
        ("inputs", inputs_in_words(report["inputs"])),
        (
            "jobs done",
            f"{report['done']} ({report['ok']} ok, {report['failed']} failed)",
        ),
        ("jobs pending", _pending_text(report)),
    ]
    lines += _output_lines(report["outputs"])
    lines.append(("last checkpoint", _age_text(report["updated"])))
    for failure in report["failures"][:_FAILURES_SHOWN]:
        lines.append(
            (
                "failure",
                f"job {failure['job_id']} ({failure['key']}): {failure['error']}",
            )
        )
    return "\n".join(f"{label:<16} {value}" for label, value in lines)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UsageError(
            f"checkpoint {str(path)!r} not found; pass the path given to --checkpoint"
        )
    if path.is_dir():
        raise UsageError(
            f"checkpoint {str(path)!r} is a folder; pass the checkpoint file"
        )
    if path.stat().st_size == 0:
        # A run creates the file empty, then writes the table within moments.
        return {}

    try:
        connection = sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro", uri=True, timeout=_READ_TIMEOUT
        )
        try:
            rows = connection.execute(f'SELECT key, value FROM "{_TABLE}"').fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise UsageError(
            f"{str(path)!r} is not a syncagg checkpoint ({exc}); pass the path given to --checkpoint"
        ) from None
    return {key: pickle.loads(bytes(value)) for key, value in rows}


def _total(inputs: Any, status: str, done: int) -> int | None:
    """Return how many jobs the run has, from the fingerprint's description of its inputs."""
    if status == "finished":
        return done
    return input_count(inputs)


def _outputs(
    described: list[dict[str, Any]], positions: Mapping[str, Any]
) -> list[dict[str, Any]]:
    return [
        {
            "path": output["path"],
            "format": output["format"],
            "position": positions.get(output["path"]),
        }
        for output in described
    ]


def _failure(result: Any) -> dict[str, Any]:
    error = getattr(result, "error", None)
    text = f"{error.type}: {error.message}" if error is not None else "unknown error"
    return {"job_id": result.job_id, "key": result.key, "error": text}


def _iso(updated: float | None) -> str | None:
    if not updated:
        return None
    return (
        datetime.datetime.fromtimestamp(updated)
        .astimezone()
        .isoformat(timespec="seconds")
    )


def _pending_text(report: Mapping[str, Any]) -> str:
    if report["pending"] is not None:
        return f"{report['pending']} of {report['total']}"
    return "unknown: the inputs had no length, so the checkpoint does not record how many there are"


def _output_lines(outputs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    if not outputs:
        return [("outputs", "none")]
    lines = []
    for index, output in enumerate(outputs):
        label = "outputs" if index == 0 else ""
        lines.append(
            (
                label,
                f"{output['path']} ({output['format']}): {_position_text(output['position'])}",
            )
        )
    return lines


def _position_text(position: Any) -> str:
    if position is None:
        return "nothing committed yet"
    if isinstance(position, int):
        return f"{position} bytes committed"
    if isinstance(position, Mapping) and "offset" in position:
        return f"{position['offset']} bytes committed"
    if isinstance(position, Mapping) and "rows" in position:
        return f"{position['rows']} rows committed"
    return f"committed at {position!r}"


def _age_text(updated: float | None) -> str:
    if not updated:
        return "never"
    age = max(time.time() - updated, 0.0)
    return f"{_iso(updated)} ({age:.0f} s ago)"
