"""One writer thread per output, fed through a bounded queue.

The collector thread puts batches of rows (or tables) on the queue and goes
on; it waits only when the queue is full, and that wait is counted in
``stall_seconds``. A failure in the writer thread is stored and raised as
``OutputError`` on the collector's next call, so it reaches the caller of
``Aggregator.run``. After a failure the thread keeps draining the queue so
that no put can block on it.

Rows that the output rejects (see ``Output.reject``) become dead letters,
which the writer thread puts on the dead-letter writer's queue before it
answers the next commit. A checkpoint commits the dead-letter writer last,
so it stores every dead letter of the rows it covers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from syncagg import deadletters
from syncagg.errors import CheckpointError, OutputError
from syncagg.outputs.base import Output, RejectedRow

__all__ = ["Origin", "OutputWriter"]

logger = logging.getLogger("syncagg.outputs")

# Maps the index of a row in one put to the id and key of the job it came from.
Origin = Callable[[int], tuple[int, str]]

_Request = tuple[str, Any, "Future[Any] | None"]

# Rejected rows logged one by one at WARNING per output; later ones at DEBUG.
_REJECTS_LOGGED = 10
_VALUE_TEXT_LIMIT = 1000


class _State:
    """State that the thread shares with its owner, without a reference to the owner."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.error: BaseException | None = None
        self.opened = False
        self.rows = 0
        self.rejected = 0
        self.dead_letters: OutputWriter | None = None


class OutputWriter:
    """Run one ``Output`` in a named daemon thread behind a bounded queue.

    Parameters
    ----------
    output : Output
        The format and path to write.
    queue_size : int
        Puts that wait in the queue before ``put`` blocks.
    """

    def __init__(self, output: Output, queue_size: int) -> None:
        self.output = output
        self.stall_seconds = 0.0
        self._requests: queue.Queue[_Request] = queue.Queue(maxsize=queue_size)
        self._state = _State(output)
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
        """Rows the thread has passed to the output so far, rejected ones included."""
        return self._state.rows

    @property
    def rejected(self) -> int:
        """Rows the output has rejected so far."""
        return self._state.rejected

    def send_rejects_to(self, dead_letters: OutputWriter) -> None:
        """Put the rows this output rejects on ``dead_letters`` as ``DeadLetter`` rows."""
        self._state.dead_letters = dead_letters

    def open(self, position: Any | None) -> None:
        """Open the file in the writer thread; on failure end the thread and raise."""
        try:
            self._call("open", position)
        except BaseException:
            # A failed open leaves no file for the thread to close, and a
            # caller that gets no writer back could not stop the thread.
            self.stop(discard=False)
            raise

    def put(self, rows: list[dict[str, Any]], origin: Origin | None = None) -> None:
        """Queue rows; blocks only while the queue is full."""
        self._put(("rows", (rows, origin), None))

    def put_table(self, table: Any, origin: Origin | None = None, encoded: Any = None) -> None:
        """Queue the rows of a pyarrow table, with what a worker encoded for this output."""
        self._put(("table", (table, origin, encoded), None))

    def put_from_thread(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows from another writer thread, without counting stall time."""
        self._raise_if_failed()
        self._requests.put(("rows", (rows, None), None))

    def _put(self, request: _Request) -> None:
        self._raise_if_failed()
        try:
            self._requests.put_nowait(request)
        except queue.Full:
            began = time.perf_counter()
            self._requests.put(request)
            self.stall_seconds += time.perf_counter() - began

    def commit(self) -> Any:
        """Wait until every queued row is durable; return the output's position."""
        return self._call("commit", None)

    def seal(self) -> None:
        """Wait until the complete file is written under its hidden name."""
        self._call("seal", None)

    def publish(self) -> None:
        """Wait until the sealed file has its final name."""
        self._call("publish", None)

    def finish(self) -> None:
        """Seal and publish: wait until the file is complete under its final name."""
        self.seal()
        self.publish()

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
        rows, origin = payload
        output.write(rows)
        state.rows += len(rows)
        _forward_rejected(state, origin)
        return None
    if kind == "table":
        table, origin, encoded = payload
        if encoded is None:
            output.write_table(table)
        else:
            output.write_encoded(table, encoded)
        state.rows += table.num_rows
        _forward_rejected(state, origin)
        return None
    if kind == "open":
        output.open(payload)
        state.opened = True
        return None
    if kind == "commit":
        position = output.commit()
        _forward_rejected(state, None)
        return position
    if kind == "seal":
        output.seal()
        _forward_rejected(state, None)
        return None
    if kind == "publish":
        output.publish()
        state.opened = False
        return None
    raise AssertionError(f"unknown writer request {kind!r}")


def _forward_rejected(state: _State, origin: Origin | None) -> None:
    """Turn the rows the output rejected into dead letters on the dead-letter writer."""
    rejected = state.output.take_rejected()
    if not rejected:
        return
    if state.dead_letters is None:
        raise ValueError(
            f"{len(rejected)} rows were rejected with invalid='dead_letter', but the run has "
            f"no dead-letter output; pass Aggregator(dead_letters=PATH). First reason: "
            f"{rejected[0].reason}"
        )
    letters = [_dead_letter(state, row, origin) for row in rejected]
    state.dead_letters.put_from_thread([letter.to_row() for letter in letters])


def _dead_letter(state: _State, rejected: RejectedRow, origin: Origin | None) -> deadletters.DeadLetter:
    state.rejected += 1
    job_id, key = origin(rejected.index) if origin is not None else (-1, "")
    text = repr(rejected.row)
    path = str(state.output.path)
    level = logging.WARNING if state.rejected <= _REJECTS_LOGGED else logging.DEBUG
    logger.log(level, "output %s rejected the row of job %d (%s): %s", path, job_id, key, rejected.reason)
    if state.rejected == _REJECTS_LOGGED:
        logger.warning("logging further rows that %s rejects at DEBUG only", path)
    return deadletters.DeadLetter(
        job_id=job_id,
        key=key,
        stage=f"output {path}",
        stage_index=-1,
        reason=rejected.reason,
        value=text if len(text) <= _VALUE_TEXT_LIMIT else text[: _VALUE_TEXT_LIMIT - 3] + "...",
    )


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
