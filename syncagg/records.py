"""The record that every job ends as."""

from __future__ import annotations

import enum
import traceback
from dataclasses import dataclass
from typing import Any

__all__ = ["JobError", "JobResult", "Status"]


class Status(str, enum.Enum):  # noqa: UP042 - str() gives "Status.OK", which StrEnum would change
    """Final status of a job."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job failed.

    Attributes
    ----------
    type : str
        Qualified name of the exception type, for example ``"ValueError"``.
    message : str
        ``str()`` of the exception.
    traceback : str
        Formatted traceback from the worker, empty when the worker died.
    """

    type: str
    message: str
    traceback: str = ""


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# which made building one record per result ten times slower, and Stream,
# hooks and pipelines build one for every result.
@dataclass(slots=True)
class JobResult:
    """Outcome of running the user's function on one input.

    Records are meant to be read; change a copy (``dataclasses.replace``).

    Attributes
    ----------
    job_id : int
        Position of the input in the input iterable, counting from 0.
    key : str
        Short text that identifies the input (see ``Aggregator(key=...)``).
    status : Status
        ``Status.OK`` or ``Status.FAILED``.
    value : Any
        What the function returned; ``None`` for a failed job.
    error : JobError or None
        Why the job failed; ``None`` for a successful job.
    worker_pid : int
        Process id of the worker that ran the job, 0 if it never ran.
    started, finished : float
        Wall-clock times (``time.time()``) around the function call.
    attempts : int
        How many times the job was started, retries included.
    """

    job_id: int
    key: str
    status: Status
    value: Any
    error: JobError | None
    worker_pid: int
    started: float
    finished: float
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.status is Status.OK


def error_fields(exc: BaseException) -> tuple[str, str, str]:
    """Return the type name, message and traceback text of a job's exception.

    An exception whose ``__str__`` raises still fails its job alone: the
    message then reports that ``str()`` failed.
    """
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        name = kind.__qualname__
    else:
        name = f"{kind.__module__}.{kind.__qualname__}"
    try:
        message = str(exc)
    except BaseException as error:  # noqa: BLE001 - a broken __str__ must not end the worker
        message = f"<str() of the {kind.__qualname__} failed with {type(error).__qualname__}>"
    try:
        text = "".join(traceback.format_exception(exc))
    except BaseException:  # noqa: BLE001 - the traceback is optional detail
        text = ""
    return name, message, text
