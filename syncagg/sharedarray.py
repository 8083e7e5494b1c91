"""Arrays that a job function fills in place in its worker's ring region.

A large array result is normally copied twice: into the ring by the worker
and out of it by the parent. ``shared_array`` saves the first copy: called
inside the job function of a worker process, it returns an array whose
memory lies in the worker's ring region, just before the message of the
batch that will carry the result. The message refers to the array by its
position, and the parent copies it out (or lends it, see ``ring.Loan``)
and frees its bytes together with the message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ring_copy", "shared_array"]

# BatchSender.allocate of this worker process; None outside a worker.
_allocate: Callable[[int], memoryview | None] | None = None


def install(allocate: Callable[[int], memoryview | None] | None) -> None:
    """Route ``shared_array`` to a worker's ring allocator, or back to numpy with ``None``."""
    global _allocate
    _allocate = allocate


def shared_array(shape: int | tuple[int, ...], dtype: npt.DTypeLike = np.float64) -> np.ndarray[Any, Any]:
    """Return an uninitialized C-ordered array to fill and return from the job function.

    In a worker process the array lies in the worker's ring region, so the
    result is not copied into the ring again. Return it (alone or inside
    the result, for example in a dict) from the same job and do not keep it,
    because its memory is reused once the parent has read the result.
    Anywhere else, and when the region has no room for it beside the arrays
    of results not sent yet, it is a plain ``numpy.empty`` array. The result
    is the same either way.

    Examples
    --------
    >>> import syncagg
    >>> out = syncagg.shared_array((2, 3), "int32")
    >>> out[:] = 7
    >>> int(out.sum())
    42
    """
    kind = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    count = math.prod(dims)
    nbytes = count * kind.itemsize
    view = None if _allocate is None or nbytes == 0 else _allocate(nbytes)
    if view is None:
        return np.empty(dims, dtype=kind)
    return np.frombuffer(view, dtype=kind, count=count).reshape(dims)


def ring_copy(array: np.ndarray[Any, Any], allocate: Callable[[int], memoryview | None]) -> np.ndarray[Any, Any] | None:
    """Return a copy of ``array`` in memory from ``allocate``, or ``None`` if it cannot move.

    Only C-contiguous arrays without Python objects move; the rest, and
    arrays that ``allocate`` finds no room for, are pickled as they are.
    """
    if not array.flags.c_contiguous or array.dtype.hasobject or array.nbytes == 0:
        return None
    view = allocate(array.nbytes)
    if view is None:
        return None
    # Bytes, not elements: numpy copies a structured array field by field
    # and would leave its padding as the ring had it, with bytes of an
    # earlier result.
    np.frombuffer(view, dtype=np.uint8)[:] = array.reshape(-1).view(np.uint8)
    return np.frombuffer(view, dtype=array.dtype, count=array.size).reshape(array.shape)
