"""The same jobs under the fork, forkserver and spawn start methods."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import syncagg as sa
from tests import jobs

START_METHODS = [
    pytest.param("fork", id="fork"),
    pytest.param("forkserver", id="forkserver"),
    pytest.param("spawn", id="spawn"),
]
INPUTS = range(30)
MULTIPLES_OF_SEVEN = [0, 7, 14, 21, 28]


def _aggregator(start_method: str) -> sa.Aggregator:
    return sa.Aggregator(
        strategy=sa.Collect(ordered=True),
        workers=2,
        progress=False,
        start_method=start_method,
    )


@pytest.mark.parametrize("start_method", START_METHODS)
def test_square_under_start_method(start_method: str) -> None:
    summary = _aggregator(start_method).run(jobs.square, INPUTS)

    assert summary.value == [{"x": x, "square": x * x} for x in INPUTS]
    assert summary.counts["ok"] == 30
    assert summary.counts["failed"] == 0


@pytest.mark.parametrize("start_method", START_METHODS)
def test_failures_under_start_method(start_method: str) -> None:
    summary = _aggregator(start_method).run(jobs.fail_on_multiples_of_seven, INPUTS)

    failures = sorted(summary.failures, key=lambda failure: failure.job_id)
    assert summary.value == [{"x": x, "square": x * x} for x in INPUTS if x % 7 != 0]
    assert summary.counts["ok"] == 25
    assert summary.counts["failed"] == 5
    assert [failure.job_id for failure in failures] == MULTIPLES_OF_SEVEN
    for failure in failures:
        assert failure.error is not None
        assert failure.error.type == "ValueError"
        assert failure.error.message == f"{failure.job_id} is a multiple of 7"
        assert "fail_on_multiples_of_seven" in failure.error.traceback
        assert failure.attempts == 1


@pytest.mark.parametrize("start_method", START_METHODS)
def test_arrays_under_start_method(start_method: str) -> None:
    summary = _aggregator(start_method).run(jobs.vector, INPUTS)

    assert summary.counts["ok"] == 30
    assert len(summary.value) == 30
    for x, array in zip(INPUTS, summary.value, strict=True):
        assert array.dtype == np.float64
        assert array.shape == (1000,)
        np.testing.assert_array_equal(array, np.full(1000, float(x)))


@pytest.mark.parametrize("start_method", START_METHODS)
def test_lambda_rejected_with_fix(start_method: str) -> None:
    aggregator = _aggregator(start_method)

    with pytest.raises(TypeError, match="pass a function defined at the top level of a module"):
        aggregator.run(lambda x: x, INPUTS)


def test_nested_function_rejected() -> None:
    def double(x: int) -> int:
        return 2 * x

    with pytest.raises(TypeError, match="not a lambda or a nested function"):
        _aggregator("fork").run(double, INPUTS)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_workers_ignore_stop_signals(start_method: str) -> None:
    stop_bits = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))

    summary = _aggregator(start_method).run(jobs.signal_masks, range(4))

    assert summary.counts["ok"] == 4
    for masks in summary.value:
        assert masks["ignored"] & stop_bits == stop_bits
        assert masks["blocked"] & stop_bits == 0
    # The parent's own mask is back as it was after starting the workers.
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()
