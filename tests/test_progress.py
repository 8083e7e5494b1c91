"""The progress display: a bar on a terminal, log lines elsewhere, nothing when disabled."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from syncagg.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


class Terminal(io.StringIO):
    """A text buffer that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def progress_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "syncagg"]


def test_log_line_without_terminal(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="syncagg"):
        progress = Progress(
            True, total=10, initial=0, failed=0, interval=0.0, stream=stream
        )
        progress.advance(3, 1)
        progress.close()

    lines = progress_lines(caplog)
    assert len(lines) == 2
    assert lines[0].startswith("progress: 3/10 jobs done (30.0%), 1 failed, ")
    assert " jobs/s, ETA " in lines[0]
    assert ", parent memory " in lines[0]
    assert stream.getvalue() == ""


def test_log_lines_wait_for_interval(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="syncagg"):
        progress = Progress(
            True, total=None, initial=2, failed=0, interval=3600.0, stream=io.StringIO()
        )
        progress.advance(2, 0)
        progress.tick()
        progress.close()

    lines = progress_lines(caplog)
    assert len(lines) == 1
    assert lines[0].startswith("progress: 4 jobs done, 0 failed, ")
    assert "ETA" not in lines[0]


def test_bar_on_terminal(caplog: pytest.LogCaptureFixture) -> None:
    stream = Terminal()
    with caplog.at_level(logging.INFO, logger="syncagg"):
        progress = Progress(True, total=10, initial=0, failed=0, stream=stream)
        progress.advance(5, 1)
        progress.close()

    text = stream.getvalue()
    assert "5/10" in text
    assert "failed=1" in text
    assert "mem=" in text
    assert progress_lines(caplog) == []


def test_disabled_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    stream = Terminal()
    with caplog.at_level(logging.INFO, logger="syncagg"):
        progress = Progress(
            False, total=10, initial=0, failed=0, interval=0.0, stream=stream
        )
        progress.advance(5, 1)
        progress.close()

    assert stream.getvalue() == ""
    assert progress_lines(caplog) == []


def test_bar_shows_failure_at_once() -> None:
    stream = Terminal()
    progress = Progress(True, total=10, initial=0, failed=0, stream=stream)
    try:
        progress.advance(5, 1)

        text = stream.getvalue()
    finally:
        progress.close()

    assert "5/10" in text
    assert "failed=1" in text


def test_log_line_above_bar() -> None:
    stream = Terminal()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("syncagg.test_progress")
    logging.getLogger("syncagg").addHandler(handler)
    try:
        progress = Progress(True, total=10, initial=0, failed=0, stream=stream)
        log.warning("job 7 failed")
        progress.close()
    finally:
        logging.getLogger("syncagg").removeHandler(handler)

    text = stream.getvalue()
    # tqdm.write clears the bar line with a carriage return before the log line.
    assert "WARNING syncagg.test_progress: job 7 failed" in re.split(r"[\r\n]", text)
    assert "]WARNING" not in text
    assert handler.stream is stream


# A run of the library on a terminal, with logging left unconfigured.
TERMINAL_RUN = """
import logging
import syncagg as sa
from tests import cli_jobs

summary = sa.Aggregator(workers=2).run(cli_jobs.square_but_seven, range(10))
print(summary.counts["failed"], len(logging.getLogger("syncagg").handlers))
"""


def run_on_terminal(source: str) -> tuple[str, str]:
    """Run Python ``source`` with standard error on a 100-column pseudo-terminal.

    Returns the standard output and the text written to the terminal.
    """
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", source],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
    finally:
        os.close(terminal)
    try:
        chunks = []
        while chunk := read_terminal(controller):
            chunks.append(chunk)
        stdout, _ = process.communicate(timeout=120)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    return stdout.decode(), b"".join(chunks).decode()


def read_terminal(controller: int) -> bytes:
    try:
        return os.read(controller, 65536)
    except OSError:
        # Linux raises EIO once the process has closed the terminal.
        return b""


def test_library_run_logs_above_bar() -> None:
    stdout, text = run_on_terminal(TERMINAL_RUN)

    assert stdout == "1 0\n"
    lines = re.split(r"[\r\n]", text)
    warnings = [line for line in lines if "job 7 (7) failed" in line]
    assert len(warnings) == 1, text
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d WARNING syncagg\.collector: job 7 \(7\) failed: "
        r"ValueError: 7 is not welcome",
        warnings[0],
    ), text
    bars = [line for line in lines if line.startswith("syncagg:")]
    assert "10/10" in bars[-1]
    assert "failed=1" in bars[-1]
