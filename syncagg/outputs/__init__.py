"""Output formats, their registry, and the writer threads that run them."""

from syncagg.outputs.arrowipc import ArrowIpc
from syncagg.outputs.base import Output, RejectedRow, RowError, from_path
from syncagg.outputs.csvfile import Csv
from syncagg.outputs.jsonarray import Json
from syncagg.outputs.jsonlines import JsonLines
from syncagg.outputs.parquet import Parquet
from syncagg.outputs.registry import (
    ENTRY_POINT_GROUP,
    FormatError,
    available_formats,
    format_class,
    make_output,
    register_format,
)
from syncagg.outputs.writer import OutputWriter

__all__ = [
    "ENTRY_POINT_GROUP",
    "ArrowIpc",
    "Csv",
    "FormatError",
    "Json",
    "JsonLines",
    "Output",
    "OutputWriter",
    "Parquet",
    "RejectedRow",
    "RowError",
    "available_formats",
    "format_class",
    "from_path",
    "make_output",
    "register_format",
]
