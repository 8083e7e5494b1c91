"""Aggregation strategies: what the collector does with each successful result.

A strategy sees the values of successful jobs in the order they arrive,
which is not the input order. Every strategy can report its state for a
checkpoint and restore it on resume; that state must pickle.
"""

from __future__ import annotations

import abc
import pickle
from collections.abc import Callable
from typing import Any

from syncagg.names import qualified_name
from syncagg.records import JobResult

__all__ = ["Collect", "Merge", "Reduce", "Strategy", "Stream"]

_MISSING: Any = object()


def _check_callable(parameter: str, value: Any) -> None:
    if not callable(value):
        raise TypeError(
            f"{parameter} must be callable, got {value!r} of type {type(value).__qualname__}"
        )


class Strategy(abc.ABC):
    """Base class of the strategies.

    The collector calls ``add_values`` with the values of each batch of
    successful results, or ``add_results`` with whole ``JobResult`` objects
    when ``wants_results`` is true.
    """

    wants_results = False

    def add_values(self, values: list[Any]) -> None:
        """Fold the values of one batch of successful jobs into the state."""
        raise NotImplementedError

    def add_results(self, results: list[JobResult]) -> None:
        """Handle one batch of successful results; used when ``wants_results``."""
        self.add_values([result.value for result in results])

    @abc.abstractmethod
    def value(self) -> Any:
        """Return the aggregated value so far."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Return to the state before any value, as at the start of a run."""

    @abc.abstractmethod
    def state(self) -> Any:
        """Return a picklable snapshot of the state for a checkpoint."""

    @abc.abstractmethod
    def restore(self, state: Any) -> None:
        """Replace the state with a snapshot from ``state()``."""

    def describe(self) -> str:
        """Return a short text that identifies the strategy and its settings."""
        return type(self).__name__


class Collect(Strategy):
    """Keep the value of every successful job in a list.

    Memory grows with the number of results; use ``Reduce``, ``Merge`` or an
    output file when the results do not fit in memory.

    Parameters
    ----------
    ordered : bool, default False
        Keep the values in input order instead of arrival order. Values are
        sorted once, when ``value()`` is called.

    Examples
    --------
    >>> collect = Collect()
    >>> collect.add_values([3, 1])
    >>> collect.value()
    [3, 1]
    """

    wants_results = False

    def __init__(self, ordered: bool = False) -> None:
        self.ordered = ordered
        self.wants_results = ordered
        self.reset()

    def reset(self) -> None:
        self._values: list[Any] = []
        self._ids: list[int] = []

    def add_values(self, values: list[Any]) -> None:
        self._values.extend(values)

    def add_results(self, results: list[JobResult]) -> None:
        self._values.extend(result.value for result in results)
        self._ids.extend(result.job_id for result in results)

    def value(self) -> list[Any]:
        if not self.ordered:
            return list(self._values)
        order = sorted(range(len(self._ids)), key=self._ids.__getitem__)
        return [self._values[i] for i in order]

    def state(self) -> Any:
        return (self._values, self._ids)

    def restore(self, state: Any) -> None:
        self._values, self._ids = list(state[0]), list(state[1])

    def describe(self) -> str:
        return f"Collect(ordered={self.ordered})"


class Reduce(Strategy):
    """Fold every value into an accumulator: ``acc = fn(acc, value)``.

    Values arrive in completion order, so the result matches a sequential
    fold only when ``fn`` does not depend on order (for example a sum or a
    merge of counters).

    Parameters
    ----------
    fn : callable
        ``fn(accumulator, value) -> accumulator``. It may update the
        accumulator in place and return it.
    initial : Any
        The starting accumulator. It is copied by pickling, so one
        ``Reduce`` can run several times without sharing state.

    Examples
    --------
    >>> import operator
    >>> total = Reduce(operator.add, 0)
    >>> total.add_values([1, 2, 3])
    >>> total.value()
    6
    """

    def __init__(self, fn: Callable[[Any, Any], Any], initial: Any) -> None:
        _check_callable("Reduce(fn=...)", fn)
        self.fn = fn
        self.initial = initial
        self.reset()

    def reset(self) -> None:
        self._acc = _copy(self.initial)

    def add_values(self, values: list[Any]) -> None:
        fn = self.fn
        acc = self._acc
        for value in values:
            acc = fn(acc, value)
        self._acc = acc

    def value(self) -> Any:
        return self._acc

    def state(self) -> Any:
        return self._acc

    def restore(self, state: Any) -> None:
        self._acc = state

    def describe(self) -> str:
        return f"Reduce({qualified_name(self.fn)})"


class Merge(Strategy):
    """Merge partial results of one type pairwise: ``merged = fn(merged, value)``.

    The first value starts the merge, so no initial value is needed; the
    result is ``None`` when no job succeeded. ``fn`` should be associative
    and commutative, because values arrive in completion order.

    Examples
    --------
    >>> from collections import Counter
    >>> merge = Merge(lambda a, b: a + b)
    >>> merge.add_values([Counter(a=1), Counter(a=2, b=1)])
    >>> merge.value()
    Counter({'a': 3, 'b': 1})
    """

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        _check_callable("Merge(fn=...)", fn)
        self.fn = fn
        self.reset()

    def reset(self) -> None:
        self._merged: Any = _MISSING

    def add_values(self, values: list[Any]) -> None:
        fn = self.fn
        merged = self._merged
        for value in values:
            merged = value if merged is _MISSING else fn(merged, value)
        self._merged = merged

    def value(self) -> Any:
        return None if self._merged is _MISSING else self._merged

    def state(self) -> Any:
        return (self._merged is not _MISSING, self.value())

    def restore(self, state: Any) -> None:
        present, merged = state
        self._merged = merged if present else _MISSING

    def describe(self) -> str:
        return f"Merge({qualified_name(self.fn)})"


class Stream(Strategy):
    """Hand each successful result to ``consumer`` as it arrives.

    The consumer runs in the collector thread and receives a ``JobResult``.
    While it runs, no other result is collected, so a slow consumer slows the
    workers through the bounded ring instead of filling memory. Results
    delivered before a checkpoint are not delivered again after a resume.

    Examples
    --------
    >>> seen = []
    >>> stream = Stream(lambda result: seen.append(result.value))
    >>> stream.value() is None
    True
    """

    wants_results = True

    def __init__(self, consumer: Callable[[JobResult], Any]) -> None:
        _check_callable("Stream(consumer=...)", consumer)
        self.consumer = consumer

    def add_results(self, results: list[JobResult]) -> None:
        consumer = self.consumer
        for result in results:
            consumer(result)

    def value(self) -> None:
        return None

    def reset(self) -> None:
        return None

    def state(self) -> None:
        return None

    def restore(self, state: Any) -> None:
        return None

    def describe(self) -> str:
        return f"Stream({qualified_name(self.consumer)})"


def _copy(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))
