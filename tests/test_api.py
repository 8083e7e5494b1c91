"""The public names and the errors for bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

import syncagg as sa
from tests import jobs


def test_all_is_sorted_and_complete() -> None:
    assert sa.__all__ == sorted(sa.__all__)
    for name in sa.__all__:
        assert getattr(sa, name) is not None


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        sa.Nope  # noqa: B018


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"workers": 0}, r"workers must be a positive int, got 0"),
        ({"workers": 2.5}, r"workers must be a positive int, got 2.5"),
        ({"retries": -1}, r"retries must be an int of 0 or more, got -1"),
        ({"batch_latency": 0}, r"batch_latency must be a positive number, got 0"),
        ({"start_method": "thread"}, r"start_method must be one of .*got 'thread'"),
        ({"workers": 4, "ring_size": 2 * 1024 * 1024}, r"give each worker at least 1 MiB"),
        ({"outputs": ["a.xlsx"]}, r"cannot choose an output format for 'a.xlsx'"),
        ({"outputs": ["a.csv", "./a.csv"]}, r"two outputs write to"),
    ],
    ids=["workers-zero", "workers-float", "retries", "latency", "start-method", "ring", "suffix", "same-path"],
)
def test_bad_setting_raises_value_error(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sa.Aggregator(**settings)  # type: ignore[arg-type]


def test_bad_strategy_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"strategy must be a syncagg strategy .* got 'sum'"):
        sa.Aggregator(strategy="sum")  # type: ignore[arg-type]


def test_reduce_needs_callable() -> None:
    with pytest.raises(TypeError, match=r"Reduce\(fn=...\) must be callable, got 3"):
        sa.Reduce(3, 0)  # type: ignore[arg-type]


def test_unpicklable_function_raises() -> None:
    aggregator = sa.Aggregator(workers=1, progress=False)
    with pytest.raises(TypeError, match=r"cannot be pickled.*top level of a module"):
        aggregator.run(lambda x: x, range(3))


def test_checkpoint_folder_missing(tmp_path: Path) -> None:
    aggregator = sa.Aggregator(workers=1, progress=False, checkpoint=tmp_path / "no" / "run.sqlite")
    with pytest.raises(sa.CheckpointError, match=r"folder .* does not exist; create it first"):
        aggregator.run(jobs.square, range(3))


def test_checkpoint_of_other_inputs_raises(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.sqlite"
    sa.Aggregator(workers=1, progress=False, checkpoint=checkpoint).run(jobs.square, range(3))
    aggregator = sa.Aggregator(workers=1, progress=False, checkpoint=checkpoint)
    with pytest.raises(sa.CheckpointMismatchError, match=r"inputs: checkpoint has range\(0, 3\), this run has range\(0, 4\)"):
        aggregator.run(jobs.square, range(4))
