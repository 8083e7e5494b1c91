"""Calling the ``on_result`` and ``on_error`` hooks in the collector thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from syncagg.errors import HookError
from syncagg.names import qualified_name
from syncagg.records import JobResult

__all__ = ["call_hook", "check_hook"]


def check_hook(name: str, hook: object) -> Callable[[JobResult], Any] | None:
    """Return ``hook`` if it is callable or ``None``, or raise ``TypeError``."""
    if hook is None:
        return None
    if not callable(hook):
        raise TypeError(f"{name} must be callable or None, got {hook!r} of type {type(hook).__qualname__}")
    return cast(Callable[[JobResult], Any], hook)


def call_hook(name: str, hook: Callable[[JobResult], Any], result: JobResult) -> None:
    """Call ``hook(result)``; raise ``HookError`` naming the hook and the job if it raises."""
    try:
        hook(result)
    except Exception as exc:
        raise HookError(
            f"the {name} hook {qualified_name(hook)} raised {type(exc).__name__}: {exc} "
            f"on job {result.job_id} ({result.key}); the run stopped, so fix the hook and run again"
        ) from exc
