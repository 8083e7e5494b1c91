"""The error type of bad command-line arguments."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """A command-line argument is invalid; the message names the value and the fix.

    The command line prints the message as one line and exits with code 2.
    """
