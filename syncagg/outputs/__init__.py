"""Output formats and the writer threads that run them."""

from syncagg.outputs.base import Output, from_path
from syncagg.outputs.csvfile import Csv
from syncagg.outputs.jsonlines import JsonLines
from syncagg.outputs.parquet import Parquet
from syncagg.outputs.writer import OutputWriter

__all__ = ["Csv", "JsonLines", "Output", "OutputWriter", "Parquet", "from_path"]
