"""Dead letters: results that a pipeline stage rejected, with the reason.

A dead letter names the job (id and key), the stage, the reason and the
value as text. With ``Aggregator(dead_letters=PATH)`` every dead letter is
written to that file (JSON Lines unless the suffix or an ``Output`` picks
another format), and the file is committed at each checkpoint with the other
outputs. The run summary keeps the first 100 in any case.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from syncagg.outputs.base import Output, from_path
from syncagg.outputs.jsonlines import JsonLines

__all__ = ["DeadLetter", "MAX_DEAD_LETTERS_KEPT", "dead_letter_output"]

MAX_DEAD_LETTERS_KEPT = 100


@dataclass(frozen=True)
class DeadLetter:
    """A result that a pipeline stage rejected.

    Attributes
    ----------
    job_id : int
        Position of the input in the input iterable.
    key : str
        The input's key (see ``Aggregator(key=...)``).
    stage : str
        The stage that rejected it, for example ``"validate(Schema(...))"``.
    stage_index : int
        Position of that stage in the pipeline, from 0.
    reason : str
        Why the stage rejected it: the exception type and message, or the
        field that did not match.
    value : str
        ``repr`` of the value that entered the stage, cut to 1000 characters.
    """

    job_id: int
    key: str
    stage: str
    stage_index: int
    reason: str
    value: str

    def to_row(self) -> dict[str, Any]:
        """Return the dead letter as a row for an output."""
        return asdict(self)


def dead_letter_output(target: Output | str | os.PathLike[str]) -> Output:
    """Return the output for dead letters: JSON Lines unless the suffix names another format."""
    if isinstance(target, Output):
        return target
    if not isinstance(target, (str, os.PathLike)):
        raise TypeError(
            f"dead_letters must be a path or a syncagg output, got {target!r} of type "
            f"{type(target).__qualname__}"
        )
    if Path(target).suffix.lower() in (".csv", ".parquet"):
        return from_path(target)
    return JsonLines(target)
