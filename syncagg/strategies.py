"""Aggregation strategies: what the collector does with each successful result.

A strategy receives the values of successful jobs in the order they
arrive, which is not the input order. ``Collect(ordered=True)`` and
``Reduce(..., ordered=True)`` restore the input order. Every strategy can
report its state for a checkpoint and restore it on resume; that state must
pickle.
"""

from __future__ import annotations

import abc
import pickle
from collections.abc import Callable
from typing import Any

from syncagg.combiners import Combiner
from syncagg.names import qualified_name
from syncagg.records import JobResult

__all__ = ["Collect", "Combine", "Merge", "Reduce", "Strategy", "Stream"]

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
    when ``wants_results`` is true. When ``wants_skipped`` is true it also
    calls ``add_skipped`` with the ids of jobs that finished without a value
    for the strategy: failed, filtered out or dead-lettered.

    A strategy that keeps no reference to a value after ``add_values``
    returns (it may keep a copy or a new object computed from it) sets
    ``borrows_values``. Large numpy arrays and Arrow buffers in values may
    then be views of the worker's shared memory instead of copies, which
    the worker reuses once they are gone.
    """

    wants_results = False
    wants_skipped = False
    borrows_values = False

    def add_values(self, values: list[Any]) -> None:
        """Fold the values of one batch of successful jobs into the state."""
        raise NotImplementedError

    def add_results(self, results: list[JobResult]) -> None:
        """Handle one batch of successful results; used when ``wants_results``."""
        self.add_values([result.value for result in results])

    def add_skipped(self, job_ids: list[int]) -> None:
        """Note jobs that finished without a value; used when ``wants_skipped``."""
        return None

    def add_partials(self, partials: list[Any]) -> None:
        """Merge accumulators that workers folded; only ``Combine`` receives them."""
        raise TypeError(f"{self.describe()} does not take accumulators folded in workers")

    @property
    def buffer_full(self) -> bool:
        """Whether the strategy keeps so many values back that new jobs should wait."""
        return False

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

    By default values are folded in completion order, so the result matches
    a sequential fold only when ``fn`` does not depend on order (for example
    a sum or a merge of counters). With ``ordered=True`` values are folded in
    input order, which any ``fn`` (string concatenation, for example) needs.

    Parameters
    ----------
    fn : callable
        ``fn(accumulator, value) -> accumulator``. It may update the
        accumulator in place and return it. In completion order, numpy
        arrays and Arrow buffers of 64 KiB or more in values may be views of
        the worker's shared memory, valid as long as they are referenced. A
        ``fn`` that keeps values should keep copies (``numpy.array(value)``):
        a kept view makes its worker send results through slower one-off
        segments, and one kept after the run keeps the ring's shared memory.
    initial : Any
        The starting accumulator. It is copied by pickling, so one
        ``Reduce`` can run several times without sharing state.
    ordered : bool, default False
        Fold in input (job id) order. A value that arrives before those of
        earlier jobs waits in a buffer; failed, filtered and dead-lettered
        jobs are skipped. The buffer and the accumulator are part of the
        checkpoint.
    max_buffered : int, default 10000
        With ``ordered``: once this many values wait, no new chunk is sent
        while jobs are in flight, so those jobs can fill the gaps. The
        buffer can still grow by the number of jobs in flight.

    Examples
    --------
    >>> import operator
    >>> total = Reduce(operator.add, 0)
    >>> total.add_values([1, 2, 3])
    >>> total.value()
    6

    In input order, values that arrive early wait for the gap to fill:

    >>> from syncagg.records import JobResult, Status
    >>> def result(job_id, value):
    ...     return JobResult(job_id, str(job_id), Status.OK, value, None, 0, 0.0, 0.0)
    >>> text = Reduce(operator.add, "", ordered=True)
    >>> text.add_results([result(2, "c"), result(0, "a")])
    >>> text.value()
    'a'
    >>> text.add_results([result(1, "b")])
    >>> text.value()
    'abc'
    """

    def __init__(
        self,
        fn: Callable[[Any, Any], Any],
        initial: Any,
        ordered: bool = False,
        max_buffered: int = 10_000,
    ) -> None:
        _check_callable("Reduce(fn=...)", fn)
        if isinstance(max_buffered, bool) or not isinstance(max_buffered, int) or max_buffered < 1:
            raise ValueError(f"Reduce(max_buffered=...) must be a positive int, got {max_buffered!r}")
        self.fn = fn
        self.initial = initial
        self.ordered = bool(ordered)
        self.max_buffered = max_buffered
        self.wants_results = self.ordered
        self.wants_skipped = self.ordered
        # In input order, early values wait in a buffer. In completion order
        # only an accumulator that is itself a value keeps one, until the
        # next value replaces it.
        self.borrows_values = not self.ordered
        self.reset()

    def reset(self) -> None:
        self._acc = _copy(self.initial)
        self._order = InputOrder()

    def add_values(self, values: list[Any]) -> None:
        fn = self.fn
        acc = self._acc
        for value in values:
            acc = fn(acc, value)
        self._acc = acc

    def add_results(self, results: list[JobResult]) -> None:
        if not self.ordered:
            self.add_values([result.value for result in results])
            return
        for result in results:
            self._order.put(result.job_id, result.value)
        self.add_values(self._order.take_ready())

    def add_skipped(self, job_ids: list[int]) -> None:
        if self.ordered and job_ids:
            self._order.skip(job_ids)
            self.add_values(self._order.take_ready())

    @property
    def buffer_full(self) -> bool:
        return self.ordered and len(self._order) >= self.max_buffered

    def value(self) -> Any:
        return self._acc

    def state(self) -> Any:
        if not self.ordered:
            return self._acc
        return (self._acc, self._order.state())

    def restore(self, state: Any) -> None:
        if not self.ordered:
            self._acc = state
            return
        self._acc, order = state
        self._order.restore(order)

    def describe(self) -> str:
        if self.ordered:
            return f"Reduce({qualified_name(self.fn)}, {_short_repr(self.initial)}, ordered=True)"
        return f"Reduce({qualified_name(self.fn)}, {_short_repr(self.initial)})"


class InputOrder:
    """Release values in job id order, holding back those that arrive early.

    ``next_id`` is the first job whose value has not been released. A job
    that finished without a value is skipped, so it does not leave a gap
    that would hold back every later value.
    """

    def __init__(self) -> None:
        self.next_id = 0
        self._waiting: dict[int, Any] = {}
        self._skipped: set[int] = set()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._skipped)

    def put(self, job_id: int, value: Any) -> None:
        """Hold the value of one job until every earlier job is settled."""
        self._waiting[job_id] = value

    def skip(self, job_ids: list[int]) -> None:
        """Settle jobs that finished without a value."""
        self._skipped.update(job_ids)

    def take_ready(self) -> list[Any]:
        """Remove and return the values that no earlier job holds back, in order."""
        ready = []
        waiting, skipped = self._waiting, self._skipped
        next_id = self.next_id
        while True:
            if next_id in waiting:
                ready.append(waiting.pop(next_id))
            elif next_id in skipped:
                skipped.remove(next_id)
            else:
                break
            next_id += 1
        self.next_id = next_id
        return ready

    def state(self) -> tuple[int, dict[int, Any], set[int]]:
        """Return a picklable snapshot of the position and what waits."""
        return (self.next_id, dict(self._waiting), set(self._skipped))

    def restore(self, state: tuple[int, dict[int, Any], set[int]]) -> None:
        """Replace the position and what waits with a snapshot from ``state``."""
        self.next_id, waiting, skipped = state
        self._waiting, self._skipped = dict(waiting), set(skipped)


class Combine(Strategy):
    """Aggregate with a combiner: fold values into accumulators and merge them.

    The result does not depend on the order of arrival (see
    ``syncagg.combiners``), and the state a checkpoint stores is one
    accumulator, whatever the number of results.

    Parameters
    ----------
    combiner : Combiner
        For example ``Sum("lines")``, ``Mean()`` or
        ``GroupBy("package", Sum("lines"))``.
    in_workers : bool, default False
        Fold in the workers: each worker folds the values of a batch into
        one accumulator and sends that instead of the values, and the
        collector merges the accumulators. This moves fewer bytes when
        values are larger than accumulators. No per-job value reaches the
        parent, so outputs, ``on_result`` and ``stream`` are rejected with
        it; failures and checkpoints work as without it. With
        ``Aggregator.collect`` there are no workers and values are folded in
        the collector.

    Examples
    --------
    >>> from syncagg.combiners import Sum
    >>> total = Combine(Sum("lines"))
    >>> total.add_values([{"lines": 3}, {"lines": 4}])
    >>> total.value()
    7
    """

    def __init__(self, combiner: Combiner, in_workers: bool = False) -> None:
        if not isinstance(combiner, Combiner):
            raise TypeError(
                f"Combine(combiner) must be a syncagg combiner such as Sum('lines') or Mean(), "
                f"got {combiner!r} of type {type(combiner).__qualname__}"
            )
        self.combiner = combiner
        self.in_workers = bool(in_workers)
        # Accumulators folded in workers are merged, and a merge may adopt
        # one as it is and add into it later, so they are never lent.
        self.borrows_values = not combiner.keeps_values and not self.in_workers
        self.reset()

    def reset(self) -> None:
        self._acc = self.combiner.create()

    def add_values(self, values: list[Any]) -> None:
        self._acc = self.combiner.add_all(self._acc, values)

    def add_partials(self, partials: list[Any]) -> None:
        merge = self.combiner.merge
        acc = self._acc
        for partial in partials:
            acc = merge(acc, partial)
        self._acc = acc

    def value(self) -> Any:
        return self.combiner.extract(self._acc)

    def state(self) -> Any:
        return self._acc

    def restore(self, state: Any) -> None:
        self._acc = state

    def describe(self) -> str:
        if self.in_workers:
            return f"Combine({self.combiner.describe()}, in_workers=True)"
        return f"Combine({self.combiner.describe()})"


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


def _short_repr(value: Any) -> str:
    """Return ``repr(value)``, cut to 80 characters, for a strategy's description."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
