"""The run summary that ``Aggregator.run`` returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncagg.deadletters import DeadLetter
from syncagg.pipeline import StageCounts
from syncagg.records import JobResult

__all__ = ["RunSummary", "rejected_key", "split_rejected"]

# Prefix of the keys in the collector's counts (which checkpoints store)
# that count the rows each output rejected, by output path.
_REJECTED_PREFIX = "rejected:"


def rejected_key(path: str) -> str:
    """Return the key in the collector's counts for the rows that the output at ``path`` rejected."""
    return _REJECTED_PREFIX + path


def split_rejected(counts: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """Split the counts into the other counts and the rejected rows by output path."""
    rest = {}
    rejected = {}
    for name, count in counts.items():
        if name.startswith(_REJECTED_PREFIX):
            rejected[name[len(_REJECTED_PREFIX) :]] = count
        else:
            rest[name] = count
    return rest, rejected


@dataclass(frozen=True)
class RunSummary:
    """The outcome of ``Aggregator.run``.

    Attributes
    ----------
    value : Any
        The strategy's final value: a list for ``Collect``, the accumulator
        for ``Reduce``, the merged value for ``Merge``, ``None`` for ``Stream``.
    counts : Mapping[str, int]
        ``"ok"`` and ``"failed"``: jobs with each status, earlier runs of the
        same checkpoint included; ``"resumed"``: jobs that earlier runs had
        finished, so this run skipped them. With a pipeline also
        ``"passed"``, ``"filtered_out"`` and ``"dead_letter"``: results with
        each pipeline outcome.
    failures : tuple of JobResult
        The first failed jobs, with their errors (at most 100).
    outputs : tuple of Path
        The output files, complete under their final names.
    checkpoint : Path or None
        The checkpoint file, if the run had one.
    elapsed : float
        Seconds this call took.
    peak_memory : int
        Peak resident memory of the parent process in bytes, from psutil
        readings taken during the run.
    stall_seconds : Mapping[str, float]
        For each output path, seconds the collector waited on its full queue.
    stages : tuple of StageCounts
        With a pipeline, for each stage the results that passed it, were
        filtered out by it or became dead letters there.
    dead_letters : tuple of DeadLetter
        The first dead letters of this call (at most 100); the dead-letter
        output holds all of them.
    rejected_rows : Mapping[str, int]
        For each output path, rows the output rejected and sent to the
        dead-letter output (``invalid="dead_letter"``, or
        ``Csv(extra="dead_letter")``), earlier runs of the same checkpoint
        included.
    """

    value: Any
    counts: Mapping[str, int]
    failures: tuple[JobResult, ...]
    outputs: tuple[Path, ...]
    checkpoint: Path | None
    elapsed: float
    peak_memory: int
    stall_seconds: Mapping[str, float]
    stages: tuple[StageCounts, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = ()
    rejected_rows: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every job succeeded."""
        return self.counts.get("failed", 0) == 0

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as JSON-compatible data, without the value."""
        return {
            "counts": dict(self.counts),
            "failures": [
                {
                    "job_id": f.job_id,
                    "key": f.key,
                    "error_type": f.error.type if f.error else None,
                    "error_message": f.error.message if f.error else None,
                }
                for f in self.failures
            ],
            "outputs": [str(path) for path in self.outputs],
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "elapsed": self.elapsed,
            "peak_memory": self.peak_memory,
            "stall_seconds": dict(self.stall_seconds),
            "stages": [stage._asdict() for stage in self.stages],
            "dead_letters": [letter.to_row() for letter in self.dead_letters],
            "rejected_rows": dict(self.rejected_rows),
        }
