"""The async adapter over Aggregator.stream, driven by asyncio.run."""

from __future__ import annotations

import ast
import asyncio
import contextlib
from pathlib import Path

import pytest

import syncagg as sa
from tests import combine_jobs, jobs

COUNT = 100


def test_async_iteration_sees_all() -> None:
    async def main() -> list[int]:
        aggregator = sa.Aggregator(workers=2, progress=False)
        return [result.job_id async for result in sa.aiter_results(aggregator, jobs.square, range(COUNT))]

    assert sorted(asyncio.run(main())) == list(range(COUNT))


def test_async_early_exit_stops_run() -> None:
    async def main() -> int:
        aggregator = sa.Aggregator(workers=2, progress=False)
        results = sa.aiter_results(aggregator, combine_jobs.slow_square, range(2000))
        async with contextlib.aclosing(results):
            async for result in results:
                return result.job_id
        return -1

    assert asyncio.run(main()) >= 0


def test_async_loop_stays_free() -> None:
    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        aggregator = sa.Aggregator(workers=2, progress=False)
        async for _ in sa.aiter_results(aggregator, combine_jobs.slow_square, range(40)):
            pass
        ticker.cancel()
        return ticks

    assert asyncio.run(main()) > 0


def test_async_error_reaches_caller() -> None:
    async def main() -> None:
        aggregator = sa.Aggregator(workers=2, progress=False, strategy=sa.Combine(sa.Sum("size")))
        async for _ in sa.aiter_results(aggregator, jobs.square, range(COUNT)):
            pass

    with pytest.raises(sa.StrategyError, match=r"Combine\(Sum\(field='size'\)\) raised KeyError"):
        asyncio.run(main())


def test_only_aio_imports_asyncio() -> None:
    package = Path(sa.__file__).parent
    importers = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py") if "asyncio" in _imported_modules(path)
    )
    assert importers == ["aio.py"]


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    return modules
