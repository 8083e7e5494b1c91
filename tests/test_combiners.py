"""Every built-in combiner gives the value of a sequential fold under any split.

A worker folds its values in batches, each batch's accumulator is pickled
(it travels through the ring and into checkpoints), and the collector merges
the accumulators in arrival order. The property tests draw the number of
workers, the split of values between them, the batching, and the order and
shape of the merges, and compare with a plain sequential fold and with a
reference computed without the combiner.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import syncagg as sa

FINITE = st.floats(allow_nan=False, allow_infinity=False)
SMALL_INTS = st.integers(min_value=-(10**6), max_value=10**6)
GROUPS = st.sampled_from(["a", "b", "c"])


def _fold_in_parts(combiner: sa.Combiner, values: list[Any], data: st.DataObject) -> Any:
    """Fold ``values`` split over workers and batches, then merge in a drawn order."""
    workers = data.draw(st.integers(min_value=1, max_value=4), label="workers")
    owners = data.draw(st.lists(st.integers(0, workers - 1), min_size=len(values), max_size=len(values)))
    accumulators = [combiner.create()]
    for worker in range(workers):
        mine = [value for value, owner in zip(values, owners, strict=True) if owner == worker]
        accumulators.extend(_fold_batches(combiner, mine, data))

    # Every accumulator travels pickled, as from a worker or a checkpoint.
    accumulators = [pickle.loads(pickle.dumps(acc)) for acc in accumulators]
    while len(accumulators) > 1:
        left = accumulators.pop(data.draw(st.integers(0, len(accumulators) - 1), label="left"))
        right = accumulators.pop(data.draw(st.integers(0, len(accumulators) - 1), label="right"))
        accumulators.append(combiner.merge(left, right))
    return combiner.extract(accumulators[0])


def _fold_batches(combiner: sa.Combiner, values: list[Any], data: st.DataObject) -> list[Any]:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(values)), max_size=4), label="cuts"))
    bounds = [0, *cuts, len(values)]
    accumulators = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        accumulator = combiner.create()
        for value in values[start:stop]:
            accumulator = combiner.add(accumulator, value)
        accumulators.append(accumulator)
    return accumulators


def _check(combiner: sa.Combiner, values: list[Any], data: st.DataObject, expected: Any) -> None:
    sequential = combiner.fold(values)
    in_parts = _fold_in_parts(combiner, values, data)
    assert sequential == expected
    assert in_parts == expected


def _exact_sum(values: list[Any]) -> int | float:
    if all(isinstance(value, int) for value in values):
        return sum(values)
    exact = sum(Fraction(value) for value in values)
    try:
        return float(exact)
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers()), data=st.data())
def test_count_any_split(values: list[int], data: st.DataObject) -> None:
    _check(sa.Count(), values, data, len(values))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.fixed_dictionaries({"size": st.none() | SMALL_INTS})), data=st.data())
def test_count_field_skips_none(values: list[dict[str, Any]], data: st.DataObject) -> None:
    expected = sum(1 for value in values if value["size"] is not None)
    _check(sa.Count("size"), values, data, expected)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers()), data=st.data())
def test_sum_ints_any_split(values: list[int], data: st.DataObject) -> None:
    _check(sa.Sum(), values, data, sum(values))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(FINITE | SMALL_INTS), data=st.data())
def test_sum_floats_exact_any_split(values: list[float], data: st.DataObject) -> None:
    _check(sa.Sum(), values, data, _exact_sum(values))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.fixed_dictionaries({"lines": SMALL_INTS})), data=st.data())
def test_sum_field_any_split(values: list[dict[str, int]], data: st.DataObject) -> None:
    _check(sa.Sum("lines"), values, data, sum(value["lines"] for value in values))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(FINITE | SMALL_INTS), data=st.data())
def test_mean_exact_any_split(values: list[float], data: st.DataObject) -> None:
    expected = None if not values else float(sum(Fraction(value) for value in values) / len(values))
    _check(sa.Mean(), values, data, expected)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers() | FINITE), data=st.data())
def test_min_max_numbers_any_split(values: list[float], data: st.DataObject) -> None:
    _check(sa.Min(), values, data, min(values, default=None))
    _check(sa.Max(), values, data, max(values, default=None))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)})), data=st.data())
def test_min_max_text_field(values: list[dict[str, str]], data: st.DataObject) -> None:
    names = [value["name"] for value in values]
    _check(sa.Min("name"), values, data, min(names, default=None))
    _check(sa.Max("name"), values, data, max(names, default=None))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.lists(SMALL_INTS, min_size=3, max_size=3)), data=st.data())
def test_array_sum_any_split(values: list[list[int]], data: st.DataObject) -> None:
    arrays = [np.array(value, dtype=np.int32) for value in values]
    sequential = sa.ArraySum().fold(arrays)
    in_parts = _fold_in_parts(sa.ArraySum(), arrays, data)
    if not values:
        assert sequential is None
        assert in_parts is None
        return
    expected = np.sum(np.array(values, dtype=np.int64), axis=0)
    assert sequential.dtype == np.int64
    assert sequential.tolist() == expected.tolist()
    assert in_parts.tolist() == expected.tolist()


EDGES = [0.0, 1.5, 10.0, 100.0]
HISTOGRAM_VALUES = st.floats(min_value=-50, max_value=150) | st.sampled_from([0.0, 1.5, 10.0, 100.0, math.nan])


def _reference_histogram(values: list[Any]) -> sa.HistogramCounts:
    flat: list[float] = []
    missing = 0
    for value in values:
        for item in (value if isinstance(value, list) else [value]):
            if item is None or math.isnan(item):
                missing += 1
            else:
                flat.append(item)
    counts, _ = np.histogram(flat, bins=EDGES)
    below = sum(1 for item in flat if item < EDGES[0])
    above = sum(1 for item in flat if item > EDGES[-1])
    return sa.HistogramCounts(tuple(EDGES), tuple(int(c) for c in counts), below, above, missing)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(HISTOGRAM_VALUES | st.none() | st.lists(HISTOGRAM_VALUES, max_size=4)),
    data=st.data(),
)
def test_histogram_any_split(values: list[Any], data: st.DataObject) -> None:
    _check(sa.Histogram(EDGES), values, data, _reference_histogram(values))


TOPK_ROWS = st.lists(st.fixed_dictionaries({"score": st.integers(0, 5), "id": st.integers(0, 3)}))


@settings(max_examples=200, deadline=None)
@given(values=TOPK_ROWS, k=st.integers(1, 4), data=st.data())
def test_topk_ties_any_split(values: list[dict[str, int]], k: int, data: st.DataObject) -> None:
    def rank(value: dict[str, int]) -> tuple[int, bytes]:
        return (value["score"], pickle.dumps(value, protocol=5))

    expected = sorted(values, key=rank, reverse=True)[:k]
    _check(sa.TopK(k, key="score"), values, data, expected)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(-50, 50)), k=st.integers(1, 4), data=st.data())
def test_topk_smallest_any_split(values: list[int], k: int, data: st.DataObject) -> None:
    _check(sa.TopK(k, largest=False), values, data, sorted(values)[:k])


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers(-20, 20) | st.text(max_size=2)), data=st.data())
def test_count_distinct_any_split(values: list[Any], data: st.DataObject) -> None:
    _check(sa.CountDistinct(), values, data, len(set(values)))


GROUP_ROWS = st.lists(st.fixed_dictionaries({"package": GROUPS, "lines": SMALL_INTS}))


@settings(max_examples=150, deadline=None)
@given(values=GROUP_ROWS, data=st.data())
def test_group_by_sum_any_split(values: list[dict[str, Any]], data: st.DataObject) -> None:
    expected: dict[str, int] = {}
    for value in values:
        expected[value["package"]] = expected.get(value["package"], 0) + value["lines"]
    _check(sa.GroupBy("package", sa.Sum("lines")), values, data, dict(sorted(expected.items())))


@settings(max_examples=100, deadline=None)
@given(values=GROUP_ROWS, data=st.data())
def test_group_by_nested_combiners(values: list[dict[str, Any]], data: st.DataObject) -> None:
    combiner = sa.GroupBy("package", sa.GroupBy(_parity, sa.Count()))
    expected: dict[str, dict[str, int]] = {}
    for value in values:
        inner = expected.setdefault(value["package"], {})
        inner[_parity(value)] = inner.get(_parity(value), 0) + 1
    _check(combiner, values, data, {key: dict(sorted(inner.items())) for key, inner in sorted(expected.items())})


def _parity(value: dict[str, Any]) -> str:
    return "even" if value["lines"] % 2 == 0 else "odd"


def test_sum_infinities_follow_ieee() -> None:
    assert sa.Sum().fold([1.0, math.inf]) == math.inf
    assert math.isnan(sa.Sum().fold([math.inf, -math.inf]))
    assert sa.Sum().fold([1e308, 1e308]) == math.inf


def test_sum_accepts_numpy_and_bools() -> None:
    assert sa.Sum().fold([np.int64(2), True, np.float32(0.5)]) == 3.5


def test_min_propagates_nan() -> None:
    assert math.isnan(sa.Min().fold([1.0, math.nan, 0.5]))
    assert math.isnan(sa.Max().fold([math.nan, 2.0]))


def test_group_by_mixed_keys_keep_order() -> None:
    result = sa.GroupBy(_identity, sa.Count()).fold(["b", 1, "b"])
    assert list(result) == ["b", 1]
    assert result == {"b": 2, 1: 1}


def _identity(value: Any) -> Any:
    return value


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: sa.Sum().fold(["3"]), r"cannot sum '3' of type str; sum ints or floats"),
        (lambda: sa.Sum("lines").fold([{"size": 1}]), r"has no field 'lines'"),
        (lambda: sa.CountDistinct().fold([[1]]), r"CountDistinct needs hashable values, got list"),
        (lambda: sa.GroupBy("g", sa.Count()).fold([{"g": [1]}]), r"GroupBy needs hashable group keys"),
        (lambda: sa.ArraySum().fold([[1, 2], [1, 2, 3]]), r"shape \(3,\) to a sum of shape \(2,\)"),
        (lambda: sa.ArraySum().fold([["a"]]), r"ArraySum adds numeric arrays, got an array of dtype <U1"),
    ],
    ids=["sum-text", "missing-field", "unhashable", "group-key", "shape", "dtype"],
)
def test_bad_values_raise(make: Callable[[], Any], message: str) -> None:
    with pytest.raises((TypeError, KeyError, ValueError), match=message):
        make()


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: sa.TopK(0), ValueError, r"TopK\(k\) must be a positive int, got 0"),
        (lambda: sa.Histogram([1]), ValueError, r"Histogram needs at least two edges, got \[1\]"),
        (lambda: sa.Histogram([0, 2, 2]), ValueError, r"edges must increase strictly, got 2 then 2"),
        (lambda: sa.Sum(3), TypeError, r"field must be a field name, a function or None, got 3"),
        (lambda: sa.GroupBy("g", sum), TypeError, r"GroupBy\(combiner\) must be a syncagg combiner"),
        (lambda: sa.Combine(sum), TypeError, r"Combine\(combiner\) must be a syncagg combiner"),
    ],
    ids=["topk-k", "one-edge", "flat-edges", "field-type", "group-combiner", "combine-type"],
)
def test_bad_settings_raise(make: Callable[[], Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def test_describe_names_settings() -> None:
    combiner = sa.GroupBy("package", sa.TopK(3, key="lines", largest=False))
    assert combiner.describe() == "GroupBy('package', TopK(3, key='lines', largest=False))"
    assert sa.Combine(sa.Sum("lines"), in_workers=True).describe() == "Combine(Sum(field='lines'), in_workers=True)"
