"""Job functions for the transport tests, importable by every start method."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import numpy as np

import syncagg as sa

# Sizes of stress payloads: mostly small, some of tens of kilobytes, a few
# larger than a 1 MiB ring region.
_SIZE_RANGES = [(0, 0), (1, 2_000), (10_000, 200_000), (1_100_000, 1_500_000)]
_SIZE_WEIGHTS = [5, 60, 30, 5]


def ramp(x: int) -> np.ndarray:
    """Return 1000 + x float64 values ``x, x + 1, ...`` in a shared array."""
    out = sa.shared_array(1000 + x, np.float64)
    out[:] = np.arange(x, x + 1000 + x, dtype=np.float64)
    return out


def ramp_expected(x: int) -> np.ndarray:
    """Return what ``ramp(x)`` returns, as a plain array."""
    return np.arange(x, x + 1000 + x, dtype=np.float64)


def matrix_row(x: int) -> dict[str, Any]:
    """Return a dict holding a 2-D int32 shared array and an empty one."""
    grid = sa.shared_array((3, 4), "int32")
    grid[:] = np.arange(12, dtype=np.int32).reshape(3, 4) * x
    return {"x": x, "grid": grid, "empty": sa.shared_array(0, np.uint8)}


def ramp_kill_on_5(x: int) -> np.ndarray:
    """Return ``ramp(x)``, but SIGKILL the worker on input 5 after allocating."""
    out = ramp(x)
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return out


def big_shared(size: int) -> np.ndarray:
    """Return ``size`` bytes in a shared array whose content depends on ``size``."""
    out = sa.shared_array(size, np.uint8)
    out[:] = size % 251
    return out


def payload_size(x: int) -> int:
    """Return the byte size of stress payload ``x``."""
    rng = random.Random(x)
    low, high = rng.choices(_SIZE_RANGES, _SIZE_WEIGHTS)[0]
    return rng.randint(low, high)


def payload_bytes(x: int) -> bytes:
    """Return the content of stress payload ``x``: its size, then a pattern of ``x``."""
    size = payload_size(x)
    pattern = (x.to_bytes(4, "little") + bytes(range(7))) * (size // 11 + 1)
    return pattern[:size]


def stress_payload(x: int) -> Any:
    """Sleep up to 2 ms, then return payload ``x`` as bytes, a numpy array or a shared array."""
    time.sleep(random.Random(-x).uniform(0, 0.002))
    data = payload_bytes(x)
    kind = x % 3
    if kind == 0:
        return data
    if kind == 1:
        return np.frombuffer(data, dtype=np.uint8).copy()
    out = sa.shared_array(len(data), np.uint8)
    out[:] = np.frombuffer(data, dtype=np.uint8)
    return out


def big_row(x: int) -> dict[str, Any]:
    """Return a row with 4 MiB of bytes, all equal to ``x % 256``."""
    return {"x": x, "data": bytes([x % 256]) * (4 * 1024 * 1024)}


# Elements of a lent ramp: 128 KiB of float64, above the size from which the
# parent lends buffers instead of copying them.
LENT_LENGTH = 16_384


def lent_ramp(x: int) -> np.ndarray:
    """Return ``LENT_LENGTH`` float64 values ``x, x + 1, ...``."""
    return np.arange(x, x + LENT_LENGTH, dtype=np.float64)


def lent_ramp_shared(x: int) -> np.ndarray:
    """Return ``lent_ramp(x)`` written into the worker's ring region."""
    out = sa.shared_array(LENT_LENGTH, np.float64)
    out[:] = np.arange(x, x + LENT_LENGTH, dtype=np.float64)
    return out


def lent_ramp_kill_once(item: tuple[str, int]) -> np.ndarray:
    """Return ``lent_ramp(x)``; SIGKILL the worker the first time it meets input 30.

    ``item`` is ``(marker path, x)``; the marker records the kill, so the
    retry succeeds.
    """
    marker, x = item
    if x == 30 and not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    return lent_ramp(x)


def lent_row(x: int) -> dict[str, Any]:
    """Return a row holding ``lent_ramp(x)`` as a list-free array field."""
    return {"x": x, "a": lent_ramp(x)}


def grouped_ramp(x: int) -> dict[str, Any]:
    """Return a row with group ``x % 2`` and ``lent_ramp(x)``."""
    return {"group": x % 2, "a": lent_ramp(x)}
