"""A closed output pipe, as in ``syncagg inspect CHECKPOINT | head -1``.

When the reader of standard output or standard error exits early, the
next write raises ``BrokenPipeError``. The command then stops quietly with
exit code 141, the code a shell reports for a process that SIGPIPE killed,
as ``cat`` or ``grep`` end in the same pipeline. The command does not let
SIGPIPE kill it, because a run must still write its last checkpoint.
"""

from __future__ import annotations

import os
import select
import sys

__all__ = ["EXIT_CLOSED_PIPE", "closed_pipe", "discard_closed_output"]

# 128 + SIGPIPE (13).
EXIT_CLOSED_PIPE = 141


def closed_pipe() -> bool:
    """Return whether the reader of standard output or standard error has gone.

    A ``BrokenPipeError`` can also come from a pipe to a worker process,
    and this check distinguishes the two.
    """
    return any(_reader_gone(fd) for fd in _standard_fds())


def discard_closed_output() -> None:
    """Point the closed standard streams at ``/dev/null``.

    Python flushes standard output once more at exit, and a flush into the
    closed pipe would print an ``Exception ignored`` message.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in _standard_fds():
            if _reader_gone(fd):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _standard_fds() -> list[int]:
    fds = []
    for stream in (sys.stdout, sys.stderr):
        try:
            fds.append(stream.fileno())
        except (AttributeError, OSError, ValueError):
            # A replaced stream without a descriptor, such as a test's buffer.
            continue
    return fds


def _reader_gone(fd: int) -> bool:
    # Linux reports POLLERR on the write end of a pipe once every reader
    # has closed it, without writing anything.
    poller = select.poll()
    poller.register(fd, 0)
    return any(events & select.POLLERR for _, events in poller.poll(0))
