"""A Dask LocalCluster in a process of its own, which tests share and connect to.

    python -m tests.dask_cluster

Starts two worker processes with one thread each on 127.0.0.1, prints the
scheduler's address on a line of its own once both are up, and closes the
cluster when its standard input closes. The scheduler fails a task at the
first lost worker (``allowed_failures=0``), so syncagg's ``retries`` alone
decide how often a job runs.

Outside the test process, the nannies' pipes to their workers and the
restarts of lost workers change no descriptor of the tests.
"""

from __future__ import annotations

import sys

import distributed


def main() -> None:
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # A free port for the scheduler's HTTP server: with no dashboard,
        # Dask still serves it, by default on port 8787.
        scheduler_kwargs={"allowed_failures": 0, "dashboard_address": "127.0.0.1:0"},
    )
    with cluster:
        cluster.wait_for_workers(2)
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
