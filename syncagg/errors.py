"""Exception types raised by syncagg."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "HookError",
    "InputError",
    "OutputError",
    "StrategyError",
    "SyncaggError",
    "WorkerStartError",
]


class SyncaggError(Exception):
    """Base class of every error that syncagg raises itself."""


class InputError(SyncaggError):
    """The input iterable raised while the run was reading it.

    The original exception is the ``__cause__``. Jobs read before the error
    ran to completion and are in the outputs and the checkpoint.
    """


class StrategyError(SyncaggError):
    """The strategy's user function raised; the original is the ``__cause__``."""


class HookError(SyncaggError):
    """An ``on_result`` or ``on_error`` hook raised; the run stopped.

    The message names the hook and the job, and the original exception is
    the ``__cause__``. With a checkpoint, the next run resumes from the last
    checkpoint.
    """


class OutputError(SyncaggError):
    """A writer thread failed to write its file.

    The message names the path. The checkpoint keeps the last state that
    every output had committed, so the run resumes once the cause is fixed.
    """


class CheckpointError(SyncaggError):
    """A checkpoint file cannot be read or written."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint belongs to a run with a different configuration."""


class WorkerStartError(SyncaggError):
    """A worker process could not start running the user's function."""
