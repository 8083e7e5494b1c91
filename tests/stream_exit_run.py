"""A script that leaves a stream open in a module-level name and exits.

    python -m tests.stream_exit_run
"""

from __future__ import annotations

import syncagg as sa
from tests import jobs

stream: sa.ResultStream | None = None


def main() -> None:
    # A module-level name keeps the stream alive until the interpreter exits.
    global stream
    aggregator = sa.Aggregator(workers=2, progress=False)
    stream = aggregator.stream(jobs.sleepy_square, range(100_000), buffer_size=10)
    for count, _result in enumerate(stream, start=1):
        if count == 21:
            break
    print("leaving", flush=True)


if __name__ == "__main__":
    main()
