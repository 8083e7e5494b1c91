"""Standard input for ``syncagg run``: lines that a stop request or a quiet pipe interrupts.

The run loop reads the inputs in the collector thread. A read that blocks on
a quiet pipe or terminal would keep that thread from seeing Ctrl-C or
SIGTERM, and the lines read so far would wait in a chunk that never fills.
``stdin_lines`` waits for data in steps of ``_WAIT_SECONDS``. After a step
with no data it yields ``PAUSE``, which ends the chunk being read, and
once the run loop was asked to stop it raises ``InputStopped``.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Iterator

from syncagg.dispatcher import PAUSE, Pause

__all__ = ["InputStopped", "stdin_lines"]

_WAIT_SECONDS = 0.1
_READ_BYTES = 1 << 20


class InputStopped(Exception):
    """The run was asked to stop while it waited for standard input."""


def stdin_lines(fd: int, stopped: Callable[[], bool]) -> Iterator[bytes | Pause]:
    """Yield the lines of file descriptor ``fd`` with their endings, and ``PAUSE`` while it is quiet."""
    pending = b""
    while True:
        ready, _, _ = select.select([fd], [], [], _WAIT_SECONDS)
        if not ready:
            if stopped():
                raise InputStopped("the run was asked to stop while it waited for standard input")
            yield PAUSE
            continue

        block = os.read(fd, _READ_BYTES)
        if not block:
            if pending:
                yield pending
            return
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line + b"\n"
