"""syncagg: aggregate the results of parallel batch jobs, safely and synchronously.

Worker processes run a function over many inputs; results travel through a
bounded shared-memory ring to a collector thread that applies a strategy,
feeds writer threads for JSON, JSON Lines, CSV, Parquet and Arrow IPC
files, and records checkpoints in SQLite so a killed run resumes with every
result exactly once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that defines it. Modules load on first use, so a
# worker process started with spawn imports only what it needs.
_EXPORTS = {
    "Aggregator": "syncagg.aggregator",
    "ArraySum": "syncagg.combiners",
    "ArrowIpc": "syncagg.outputs.arrowipc",
    "CheckpointError": "syncagg.errors",
    "CheckpointMismatchError": "syncagg.errors",
    "Collect": "syncagg.strategies",
    "Combine": "syncagg.strategies",
    "Combiner": "syncagg.combiners",
    "Count": "syncagg.combiners",
    "CountDistinct": "syncagg.combiners",
    "Csv": "syncagg.outputs.csvfile",
    "DeadLetter": "syncagg.deadletters",
    "Field": "syncagg.schema",
    "GroupBy": "syncagg.combiners",
    "Histogram": "syncagg.combiners",
    "HistogramCounts": "syncagg.combiners",
    "HookError": "syncagg.errors",
    "InputError": "syncagg.errors",
    "JobError": "syncagg.records",
    "JobResult": "syncagg.records",
    "Json": "syncagg.outputs.jsonarray",
    "JsonLines": "syncagg.outputs.jsonlines",
    "Max": "syncagg.combiners",
    "Mean": "syncagg.combiners",
    "MemoryLimitError": "syncagg.memory",
    "Merge": "syncagg.strategies",
    "Min": "syncagg.combiners",
    "Output": "syncagg.outputs.base",
    "OutputError": "syncagg.errors",
    "Parquet": "syncagg.outputs.parquet",
    "Pipeline": "syncagg.pipeline",
    "Reduce": "syncagg.strategies",
    "RejectedRow": "syncagg.outputs.base",
    "ResultStream": "syncagg.streaming",
    "RowError": "syncagg.outputs.base",
    "RunSummary": "syncagg.summary",
    "Schema": "syncagg.schema",
    "StageCounts": "syncagg.pipeline",
    "Status": "syncagg.records",
    "Strategy": "syncagg.strategies",
    "StrategyError": "syncagg.errors",
    "Stream": "syncagg.strategies",
    "Sum": "syncagg.combiners",
    "SyncaggError": "syncagg.errors",
    "Threads": "syncagg.executors",
    "TopK": "syncagg.combiners",
    "WorkerStartError": "syncagg.errors",
    "aiter_results": "syncagg.aio",
    "available_formats": "syncagg.outputs.registry",
    "make_output": "syncagg.outputs.registry",
    "register_format": "syncagg.outputs.registry",
    "shared_array": "syncagg.sharedarray",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from syncagg.aggregator import Aggregator
    from syncagg.aio import aiter_results
    from syncagg.combiners import (
        ArraySum,
        Combiner,
        Count,
        CountDistinct,
        GroupBy,
        Histogram,
        HistogramCounts,
        Max,
        Mean,
        Min,
        Sum,
        TopK,
    )
    from syncagg.deadletters import DeadLetter
    from syncagg.errors import (
        CheckpointError,
        CheckpointMismatchError,
        HookError,
        InputError,
        OutputError,
        StrategyError,
        SyncaggError,
        WorkerStartError,
    )
    from syncagg.executors import Threads
    from syncagg.memory import MemoryLimitError
    from syncagg.outputs.arrowipc import ArrowIpc
    from syncagg.outputs.base import Output, RejectedRow, RowError
    from syncagg.outputs.csvfile import Csv
    from syncagg.outputs.jsonarray import Json
    from syncagg.outputs.jsonlines import JsonLines
    from syncagg.outputs.parquet import Parquet
    from syncagg.outputs.registry import available_formats, make_output, register_format
    from syncagg.pipeline import Pipeline, StageCounts
    from syncagg.records import JobError, JobResult, Status
    from syncagg.schema import Field, Schema
    from syncagg.sharedarray import shared_array
    from syncagg.strategies import Collect, Combine, Merge, Reduce, Strategy, Stream
    from syncagg.streaming import ResultStream
    from syncagg.summary import RunSummary


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'syncagg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
