"""The progress display: a bar on a terminal, log lines elsewhere, nothing when disabled."""

from __future__ import annotations

import io
import logging

import pytest

from syncagg.progress import Progress


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
