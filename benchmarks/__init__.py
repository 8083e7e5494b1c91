"""Benchmarks of syncagg side by side with the libraries used in its place.

Run them with ``python -m benchmarks`` (see ``benchmarks/__main__.py``); the
peers come from the ``bench`` extra: ``pip install '.[bench]'``.

Other modules of this package become workloads of the runner when they
define, at module level::

    def rows(quick: bool, repeat: int) -> list[dict[str, Any]]: ...

Each returned dict is one row of the table: ``workload`` (str), ``library``
(str), and either ``items`` (int, results per run) with ``seconds`` (float,
the median wall time of a run), or ``wall_s`` with a throughput as
``results_per_s`` or ``gb_s``. Optional: ``unit`` (of ``items`` per second,
default ``"items/s"``), ``runs`` (int), ``peak_memory`` (bytes above the
baseline), ``note`` (str); other numbers are shown in the note. The first
row of each workload is the one the others are compared with. The runner
calls ``rows`` in a fresh interpreter, with ``quick=True`` for ``--quick``
and ``--tiny``.
"""
