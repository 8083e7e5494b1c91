"""Stable, readable names for user callables, for messages and fingerprints."""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["qualified_name"]


def qualified_name(fn: Any) -> str:
    """Return ``module.qualname`` of a callable, looking through ``functools.partial``.

    The text contains no memory addresses, so it is the same in every run
    of the same code and can identify a run's configuration.

    >>> import functools, operator
    >>> qualified_name(functools.partial(operator.add, 1))
    '_operator.add(1)'
    """
    if isinstance(fn, functools.partial):
        arguments = [repr(a) for a in fn.args]
        arguments += [f"{k}={v!r}" for k, v in sorted(fn.keywords.items())]
        return f"{qualified_name(fn.func)}({', '.join(arguments)})"

    function = getattr(fn, "__func__", fn)
    name = getattr(function, "__qualname__", None)
    if name is None:
        function = type(fn)
        name = function.__qualname__
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{name}"
