"""The inputs of a run as checkpoint fingerprints record them, and in words."""

from __future__ import annotations

from typing import Any

import pytest

from syncagg.settings import describe_inputs, input_count, inputs_in_words


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        (range(0, 5), "range(0, 5)"),
        ([1, 2, 3], "3 inputs (list)"),
        ((x for x in [1]), "an unknown number of inputs (generator)"),
    ],
    ids=["range", "list", "generator"],
)
def test_library_inputs_in_words(inputs: Any, words: str) -> None:
    assert inputs_in_words(describe_inputs(inputs)) == words


@pytest.mark.parametrize(
    ("described", "words"),
    [
        ("InputFiles of 168 items", "168 rows of the input files"),
        ("WithStdin", "rows of standard input and the input files"),
        (None, "unknown inputs"),
    ],
    ids=["files", "stdin", "missing"],
)
def test_command_line_inputs_in_words(described: Any, words: str) -> None:
    assert inputs_in_words(described) == words


@pytest.mark.parametrize(
    ("described", "count"),
    [
        (describe_inputs(range(0, 10, 3)), 4),
        (describe_inputs([1, 2, 3]), 3),
        ("InputFiles of 168 items", 168),
        ("WithStdin", None),
        (None, None),
    ],
    ids=["range-step", "list", "files", "stdin", "missing"],
)
def test_input_count(described: Any, count: int | None) -> None:
    assert input_count(described) == count
