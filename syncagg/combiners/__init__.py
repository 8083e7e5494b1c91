"""Combiners: aggregations in four steps that can run in parts and merge.

A combiner splits an aggregation into four steps: ``create`` returns an empty
accumulator, ``add`` folds one value into an accumulator, ``merge`` combines
two accumulators, and ``extract`` turns an accumulator into the final value.
Because accumulators merge, values can be folded in any split over workers
and batches and the parts merged in any order. Every built-in combiner then
returns the same value as one sequential fold; ``ArraySum`` of float arrays
is the exception, see there.

Accumulators must pickle, because they travel from the workers with
``Combine(..., in_workers=True)`` and go into checkpoints. ``add`` and
``merge`` may change the accumulator they receive and return it, so an
accumulator is used once: pass the returned one on.
"""

from __future__ import annotations

from syncagg.combiners.arrays import ArraySum, Histogram, HistogramCounts
from syncagg.combiners.base import Combiner, FieldGetter, FieldSpec, describe_field, make_picker
from syncagg.combiners.grouping import GroupBy
from syncagg.combiners.ranking import CountDistinct, TopK
from syncagg.combiners.scalars import Count, Max, Mean, Min, Sum

__all__ = [
    "ArraySum",
    "Combiner",
    "Count",
    "CountDistinct",
    "FieldGetter",
    "FieldSpec",
    "GroupBy",
    "Histogram",
    "HistogramCounts",
    "Max",
    "Mean",
    "Min",
    "Sum",
    "TopK",
    "describe_field",
    "make_picker",
]
