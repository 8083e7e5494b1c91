"""Result batches: encoding into the ring and decoding in the collector.

A worker gathers its results into a ``ResultBatch`` and flushes it when the
batch reaches ``batch_bytes`` (estimated) or has waited ``batch_latency``
seconds. The batch is pickled with protocol 5 so that numpy arrays, Arrow
buffers and ``memoryview`` values (through a reducer in this module) stay out
of band. Each such buffer is copied once into the ring, never through a
pipe, and once out of it into its own ``bytearray``, unless the parent lends
the result views of the ring instead (``ring.Loan``). ``bytes`` and
``bytearray`` values travel inside the pickle stream, because pickle has no
out-of-band form for them. An array that the job function allocated in the
ring with ``syncagg.shared_array`` is not copied into the message: the
message refers to it by its position in the region, before the message.

Message layout in the ring, all integers little-endian::

    +0     u32 k          number of out-of-band buffers
    +4     u32 reserved
    +8     u64 p          payload length
    +16    k x 2 u64      buffer lengths, and 1 + the absolute ring position
                          of each buffer that lies in the ring region (else 0)
    ...    payload        the pickle stream, p bytes
    ...    buffers        the buffers not in the region, each starting on a
                          64-byte boundary

After writing a message the worker sends a small descriptor on its own
result pipe: ``("ring", start, end, count)``, or ``("segment", name, size,
count, release)`` for a message that cannot wait for ring space, which
travels in a segment of its own that the parent unlinks after reading.
``release`` is the ring position to free after it (0 for none): the end of
the arrays in the region that the message refers to.
"""

from __future__ import annotations

import copyreg
import io
import itertools
import pickle
import struct
from collections.abc import Callable, Iterable, MutableSequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LEND_MIN_BYTES", "ResultBatch", "decode_message", "encode_message", "estimate_size"]

_HEAD = struct.Struct("<IIQ")
_BUFFER = struct.Struct("<QQ")
_ALIGN = 64


@dataclass
class ResultBatch:
    """Results of consecutive jobs from one worker, stored as columns.

    Column storage keeps pickling cheap: a list of floats or ints pickles far
    faster than the same values spread over one object per result. Worker
    processes send ``finished`` as ``array.array("d")``, which pickles and
    unpickles as one memory copy and frees no float objects one by one;
    other sources use lists. A job starts when the one before it finishes,
    except where ``starts`` (index to time) says otherwise, as it does for
    the first job; ``started_at`` reads the two together, and a worker
    appends one time a job instead of two. ``job_ids`` is a ``range`` when
    a worker process ran consecutive jobs, as it does with fresh inputs.
    ``errors`` maps an index in the columns to ``(type, message, traceback)``
    of a failed job, whose value is ``None``. ``partials`` contains one
    accumulator when the worker folded the batch's values itself
    (``Combine(..., in_workers=True)``, see ``folding.py``). The values
    column then contains ``None`` for each folded value.
    """

    worker_pid: int
    job_ids: range | list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    starts: dict[int, float] = field(default_factory=dict)
    finished: MutableSequence[float] = field(default_factory=list)
    errors: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    partials: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.job_ids)

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (
            self.worker_pid, self.job_ids, self.values, self.starts, self.finished, self.errors, self.partials
        )
        return (ResultBatch, fields)

    def started_at(self, index: int) -> float:
        """Return when the job at ``index`` started."""
        start = self.starts.get(index)
        return self.finished[index - 1] if start is None else start


# Estimated encoded sizes of common scalar types, looked up before any test.
SCALAR_SIZES: dict[type, int] = {int: 16, float: 16, bool: 8, type(None): 4}


def estimate_size(value: Any, depth: int = 2) -> int:
    """Estimate the encoded size of a value cheaply, without pickling it.

    Dicts, lists and tuples are sized ``depth`` levels deep, so a row that
    contains an array or a long string counts with it. Deeper levels count
    32 bytes an item. Of a long container only the first items are sized,
    and their mean is taken for the rest.
    """
    scalar = SCALAR_SIZES.get(type(value))
    if scalar is not None:
        return scalar
    if isinstance(value, (bytes, bytearray, str)):
        return len(value) + 16
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes + 128
    if isinstance(value, dict):
        return 16 + _estimate_items(value.values(), len(value), depth, 32)
    if isinstance(value, (list, tuple)):
        return 16 + _estimate_items(value, len(value), depth, 0)
    return 32


_SAMPLED_ITEMS = 64


def _estimate_items(items: Iterable[Any], count: int, depth: int, overhead: int) -> int:
    if depth == 0 or count == 0:
        return count * (overhead + 32)
    sample = list(itertools.islice(items, _SAMPLED_ITEMS))
    sized = sum(overhead + estimate_size(item, depth - 1) for item in sample)
    return sized * count // len(sample)


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


# Returns the absolute ring position of a buffer that lies in the ring
# region, or None for a buffer that must be copied into the message.
RingLocator = Callable[[memoryview], "int | None"]


class EncodedMessage:
    """A pickled object and its out-of-band buffers, ready to copy into memory."""

    def __init__(self, obj: Any, locate: RingLocator | None = None) -> None:
        self.buffers: list[memoryview] = []
        # 1 + the ring position of each buffer, 0 for one copied into the message.
        self._positions: list[int] = []
        self._locate = locate
        self.payload = _dumps(obj, self._keep)

        header = _HEAD.size + _BUFFER.size * len(self.buffers)
        self._payload_at = header
        end = header + len(self.payload)
        self._buffer_at = []
        for buffer, position in zip(self.buffers, self._positions, strict=True):
            if position:
                self._buffer_at.append(0)
                continue
            end = _aligned(end)
            self._buffer_at.append(end)
            end += buffer.nbytes
        self.size = end

    def _keep(self, buffer: pickle.PickleBuffer) -> None:
        raw = buffer.raw()
        position = None if self._locate is None else self._locate(raw)
        self.buffers.append(raw)
        self._positions.append(0 if position is None else position + 1)

    def write_into(self, target: memoryview) -> None:
        """Copy the message into ``target``, which holds at least ``size`` bytes."""
        _HEAD.pack_into(target, 0, len(self.buffers), 0, len(self.payload))
        for i, (buffer, position) in enumerate(zip(self.buffers, self._positions, strict=True)):
            _BUFFER.pack_into(target, _HEAD.size + i * _BUFFER.size, buffer.nbytes, position)

        target[self._payload_at : self._payload_at + len(self.payload)] = self.payload
        for at, buffer, position in zip(self._buffer_at, self.buffers, self._positions, strict=True):
            if not position:
                target[at : at + buffer.nbytes] = buffer

    def release(self) -> None:
        """Drop the references to the pickled object's buffers."""
        for buffer in self.buffers:
            buffer.release()
        self.buffers.clear()


def _dumps(obj: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any]) -> bytes:
    stream = io.BytesIO()
    pickler = pickle.Pickler(stream, protocol=5, buffer_callback=buffer_callback)
    # Built per call, so that reducers registered with copyreg later still apply.
    pickler.dispatch_table = {**copyreg.dispatch_table, memoryview: _reduce_memoryview}
    pickler.dump(obj)
    return stream.getvalue()


def _reduce_memoryview(view: memoryview) -> tuple[Any, ...]:
    """Reduce a ``memoryview``, which pickle rejects, to its bytes, format and shape.

    Raises ``TypeError`` for a format that ``memoryview.cast`` cannot
    rebuild, such as the structured formats of numpy record arrays.
    """
    # The type stubs accept only literal formats, hence the Any.
    probe: Any = memoryview(bytes(view.itemsize))
    try:
        probe.cast(view.format)
    except (TypeError, ValueError):
        raise TypeError(
            f"cannot pickle a memoryview of format {view.format!r}; only native "
            "single-character formats such as 'B' or 'd' can be rebuilt"
        ) from None
    data = pickle.PickleBuffer(view) if view.c_contiguous else view.tobytes()
    return (_rebuild_memoryview, (data, view.format, view.shape, view.readonly))


def _rebuild_memoryview(data: Any, item_format: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    view = memoryview(data)
    if view.readonly and not readonly:
        # A non-contiguous view arrives as bytes; keep the original writable.
        view = memoryview(bytearray(view))
    flat: Any = view.cast("B")
    if 0 in shape:
        # memoryview.cast rejects a shape with a zero, so an empty view comes back flat.
        rebuilt: memoryview = flat.cast(item_format)
    else:
        rebuilt = flat.cast(item_format, shape)
    return rebuilt


def encode_message(obj: Any, locate: RingLocator | None = None) -> EncodedMessage:
    """Pickle ``obj`` with protocol 5, keeping large buffers out of band.

    ``locate`` finds the buffers that already lie in the ring region, which
    the message then refers to instead of copying them.
    """
    return EncodedMessage(obj, locate)


# Buffers from this size up may be lent out as views instead of copied. Below
# it a copy costs less than the loan's bookkeeping.
LEND_MIN_BYTES = 64 * 1024


def decode_message(
    source: memoryview,
    ring: Callable[[int, int], memoryview] | None = None,
    lend: Callable[[memoryview], Any] | None = None,
) -> Any:
    """Unpickle a message from shared memory.

    The pickle stream is read in place; each out-of-band buffer is copied
    once into its own ``bytearray``, so the object owns no shared memory and
    the region can be released as soon as this returns. With ``lend``,
    buffers of ``LEND_MIN_BYTES`` or more are not copied: ``lend(view)``
    returns the object that the unpickled value is built on instead.
    ``ring(start, end)`` returns a view of the ring region, for buffers that
    the message refers to by position; it is required when the message has
    such buffers.
    """
    count, _, payload_length = _HEAD.unpack_from(source, 0)
    table = [_BUFFER.unpack_from(source, _HEAD.size + i * _BUFFER.size) for i in range(count)]

    payload_at = _HEAD.size + _BUFFER.size * count
    end = payload_at + payload_length
    buffers = []
    for length, position in table:
        if position:
            if ring is None:
                raise ValueError("the message refers to ring memory, but no ring was given to read it")
            buffers.append(_take(ring(position - 1, position - 1 + length), lend))
            continue
        end = _aligned(end)
        buffers.append(_take(source[end : end + length], lend))
        end += length

    with source[payload_at : payload_at + payload_length] as payload:
        return pickle.loads(payload, buffers=buffers)


def _take(view: memoryview, lend: Callable[[memoryview], Any] | None) -> Any:
    """Copy a buffer out of shared memory, or lend it when it is large enough."""
    if lend is not None and view.nbytes >= LEND_MIN_BYTES:
        return lend(view)
    with view:
        return bytearray(view)
