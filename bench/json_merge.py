"""The cost of the JSON merge functions in PostgreSQL: 0001's bodies against 0003's.

    python bench/json_merge.py postgresql://postgres@127.0.0.1:5432/postgres

Both versions are created in scratch schemas (``bench_merge_0001``, ``bench_merge_0003``; a
function's recursive call resolves through ``search_path``, so each calls itself) and dropped
afterwards; nothing else in the database is touched. Each shape is run ``--repeat`` times and
the best time is printed, in milliseconds of server time as seen by one client (the result is
measured with ``octet_length`` so it is not sent back). A run that reaches ``--timeout`` prints
``>timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import orjson

VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def _migration(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", VERSIONS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keys(n: int) -> dict[str, Any]:
    return {f"k{i}": i for i in range(n)}


def _items(start: int, n: int) -> list[Any]:
    return [{"sku": f"s{i}", "n": i} for i in range(start, start + n)]


# name -> (function, first argument, second argument)
SHAPES: dict[str, tuple[str, Callable[[], Any], Callable[[], Any]]] = {
    "patch {} with 4,000 keys": ("jsonb_merge_patch", dict, lambda: _keys(4000)),
    "patch {} with 20,000 keys": ("jsonb_merge_patch", dict, lambda: _keys(20000)),
    "patch {} with 95,000 keys (1 MiB)": ("jsonb_merge_patch", dict, lambda: _keys(95000)),
    "patch 20,000 keys with 20,000 nulls": (
        "jsonb_merge_patch",
        lambda: _keys(20000),
        lambda: dict.fromkeys(_keys(20000)),
    ),
    "patch {} with 10,000 nested objects": (
        "jsonb_merge_patch",
        dict,
        lambda: {f"k{i}": {"a": {"b": i}} for i in range(10000)},
    ),
    "merge 2,000 array items each side": (
        "jsonb_merge_guest",
        lambda: {"cart": _items(0, 2000)},
        lambda: {"cart": _items(1000, 2000)},
    ),
    "merge 20,000 keys each side": (
        "jsonb_merge_guest",
        lambda: _keys(20000),
        lambda: {f"g{i}": i for i in range(20000)},
    ),
}


async def _time(conn: asyncpg.Connection, sql: str, a: str, b: str, timeout: float) -> float:
    start = time.perf_counter()
    try:
        await conn.fetchval(sql, a, b, timeout=timeout)
    except (TimeoutError, asyncpg.QueryCanceledError):
        return float("inf")
    return (time.perf_counter() - start) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dsn")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=40.0)
    args = parser.parse_args()
    bodies = {
        "0001": _migration("0001_initial"),
        "0003": _migration("0003_linear_json_merge"),
    }
    conn = await asyncpg.connect(args.dsn)
    try:
        for version, module in bodies.items():
            schema = f"bench_merge_{version}"
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
            await conn.execute(f"SET search_path = {schema}, public")
            await conn.execute(module.MERGE_PATCH)
            await conn.execute(module.MERGE_GUEST)
        await conn.execute(f"SET statement_timeout = '{int(args.timeout)}s'")
        print(f"{'shape':40} {'0001 ms':>10} {'0003 ms':>10}")
        for name, (function, first, second) in SHAPES.items():
            a, b = orjson.dumps(first()).decode(), orjson.dumps(second()).decode()
            cells = []
            for version in bodies:
                await conn.execute(f"SET search_path = bench_merge_{version}, public")
                sql = f"SELECT octet_length({function}($1::jsonb, $2::jsonb)::text)"
                best = min(
                    [await _time(conn, sql, a, b, args.timeout + 5) for _ in range(args.repeat)]
                )
                cells.append(">timeout" if best == float("inf") else f"{best:.1f}")
            print(f"{name:40} {cells[0]:>10} {cells[1]:>10}", flush=True)
    finally:
        for version in bodies:
            await conn.execute(f"DROP SCHEMA IF EXISTS bench_merge_{version} CASCADE")
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
