"""One writer thread per output, fed through a bounded queue.

The collector thread puts batches of rows on the queue and goes on; it waits
only when the queue is full, and that wait is counted in ``stall_seconds``.
A failure in the writer thread is stored and raised as ``OutputError`` on the
collector's next call, so it reaches the caller of ``Aggregator.run``. After
a failure the thread keeps draining the queue so that no put can block on it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

from syncagg.errors import CheckpointError, OutputError
from syncagg.outputs.base import Output

__all__ = ["OutputWriter"]

logger = logging.getLogger("syncagg.outputs")

_Request = tuple[str, Any, "Future[Any] | None"]


class _State:
    """What the thread shares with its owner; holds no reference to the owner."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.opened = False
        self.rows = 0


class OutputWriter:
    """Run one ``Output`` in a named daemon thread behind a bounded queue."""

    def __init__(self, output: Output, queue_size: int) -> None:
        self.output = output
        self.stall_seconds = 0.0
        self._requests: queue.Queue[_Request] = queue.Queue(maxsize=queue_size)
        self._state = _State()
        self._thread = threading.Thread(
            target=_serve,
            args=(output, self._requests, self._state),
            name=f"syncagg-writer-{output.format}-{output.path.name}",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    @property
    def rows(self) -> int:
        """Rows the thread has written so far."""
        return self._state.rows

    def open(self, position: Any | None) -> None:
        """Open the file in the writer thread; on failure end the thread and raise."""
        try:
            self._call("open", position)
        except BaseException:
            # A failed open leaves no file for the thread to close, and a
            # caller that gets no writer back could not stop the thread.
            self.stop(discard=False)
            raise

    def put(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows; blocks only while the queue is full."""
        self._raise_if_failed()
        request: _Request = ("rows", rows, None)
        try:
            self._requests.put_nowait(request)
        except queue.Full:
            began = time.perf_counter()
            self._requests.put(request)
            self.stall_seconds += time.perf_counter() - began

    def commit(self) -> Any:
        """Wait until every queued row is durable; return the output's position."""
        return self._call("commit", None)

    def finish(self) -> None:
        """Wait until the file is complete under its final name."""
        self._call("finish", None)

    def stop(self, discard: bool) -> None:
        """End the thread; with ``discard`` remove the partial file. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._requests.put(("stop", discard, None))
        self._thread.join()

    def _call(self, kind: str, payload: Any) -> Any:
        self._raise_if_failed()
        reply: Future[Any] = Future()
        self._requests.put((kind, payload, reply))
        try:
            return reply.result()
        except (CheckpointError, OutputError):
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    def _raise_if_failed(self) -> None:
        error = self._state.error
        if error is not None:
            raise self._error(error) from error

    def _error(self, exc: BaseException) -> OutputError:
        return OutputError(f"writing {str(self.output.path)!r} failed: {type(exc).__name__}: {exc}")


def _serve(output: Output, requests: queue.Queue[_Request], state: _State) -> None:
    while True:
        kind, payload, reply = requests.get()
        if kind == "stop":
            _stop(output, state, discard=payload)
            return
        if state.error is not None:
            if reply is not None:
                reply.set_exception(state.error)
            continue

        try:
            result = _handle(output, state, kind, payload)
        except BaseException as exc:  # noqa: BLE001 - stored and raised in the collector
            state.error = exc
            if reply is not None:
                reply.set_exception(exc)
            continue
        if reply is not None:
            reply.set_result(result)


def _handle(output: Output, state: _State, kind: str, payload: Any) -> Any:
    if kind == "rows":
        output.write(payload)
        state.rows += len(payload)
        return None
    if kind == "open":
        output.open(payload)
        state.opened = True
        return None
    if kind == "commit":
        return output.commit()
    if kind == "finish":
        output.finish()
        state.opened = False
        return None
    raise AssertionError(f"unknown writer request {kind!r}")


def _stop(output: Output, state: _State, discard: bool) -> None:
    if not state.opened:
        return
    try:
        if discard:
            output.discard()
        else:
            output.close()
    except Exception:
        logger.exception("closing %s failed", output.path)
