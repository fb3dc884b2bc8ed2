"""The JSON merge functions of migration 0003, called directly in the migrated database.

``jsonb_merge_patch`` is RFC 7396; ``jsonb_merge_guest`` is CONTRACT §6's merge on login. Both
were rewritten to run in one pass (security finding 1); besides the examples below, they are
compared with 0001's bodies on random documents, so the rewrite kept their meaning exactly.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


async def _apply(conn: AsyncConnection, function: str, pairs: list[tuple[Any, Any]]) -> list[str]:
    """``function(a, b)`` for each pair, in one statement, as jsonb's own text."""
    rows = await conn.execute(
        sa.text(
            f"SELECT {function}(pair -> 0, pair -> 1)::text "
            "FROM jsonb_array_elements(CAST(:pairs AS jsonb)) WITH ORDINALITY AS p (pair, n) "
            "ORDER BY n"
        ),
        {"pairs": json.dumps([list(pair) for pair in pairs])},
    )
    return list(rows.scalars())


async def _one(engine: AsyncEngine, function: str, a: Any, b: Any) -> str:
    async with engine.connect() as conn:
        return _canonical(json.loads((await _apply(conn, function, [(a, b)]))[0]))


def _canonical(value: Any) -> str:
    """Compared as text: in Python ``1 == 1.0 == True``, in JSON they are three values."""
    return json.dumps(value, sort_keys=True)


# RFC 7396 appendix A, every example.
RFC_7396_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7396_EXAMPLES)
async def test_merge_patch_gives_every_result_of_rfc_7396_appendix_a(
    engine: AsyncEngine, target: Any, patch: Any, result: Any
) -> None:
    assert await _one(engine, "jsonb_merge_patch", target, patch) == _canonical(result)


async def test_merge_patch_recurses_into_nested_objects_and_replaces_mismatched_types(
    engine: AsyncEngine,
) -> None:
    target = {"p": {"t": "dark", "n": {"k": 1, "drop": 2}, "list": [1]}, "s": "x", "o": {"a": 1}}
    patch = {"p": {"n": {"drop": None, "new": {"z": None}}, "list": {"x": 1}}, "s": {"y": None}}
    assert await _one(engine, "jsonb_merge_patch", target, patch) == _canonical(
        {"p": {"t": "dark", "n": {"k": 1, "new": {}}, "list": {"x": 1}}, "s": {}, "o": {"a": 1}}
    )
    # Nulls inside an array are values, not removals.
    nulls = {"a": [None, {"b": None}]}
    assert await _one(engine, "jsonb_merge_patch", {}, nulls) == _canonical(nulls)


@pytest.mark.parametrize(
    ("account", "guest", "merged"),
    [
        # Arrays: every item of the account's, in its order, then the guest's new ones, once each.
        ({"a": [1, 2]}, {"a": [2, 3, 3, 1, 4]}, {"a": [1, 2, 3, 4]}),
        ({"a": [1, 1]}, {"a": [1, 5, 5]}, {"a": [1, 1, 5]}),
        ({"a": []}, {"a": [3, 2, 3]}, {"a": [3, 2]}),
        ({"a": [{"x": 1}]}, {"a": [{"x": 2}, {"x": 1}, {"x": 2}]}, {"a": [{"x": 1}, {"x": 2}]}),
        ({"a": [1]}, {"a": [1.0, "1", True, None, None]}, {"a": [1, "1", True, None]}),
        # Objects merge recursively; scalars keep the account's value.
        (
            {"p": {"t": "dark", "n": {"k": 1}, "l": ["en"]}, "s": "acc"},
            {"p": {"t": "light", "n": {"a": 2}, "l": ["fr", "en"], "f": "serif"}, "s": "g", "g": 1},
            {
                "p": {"t": "dark", "n": {"k": 1, "a": 2}, "l": ["en", "fr"], "f": "serif"},
                "s": "acc",
                "g": 1,
            },
        ),
        # Mismatched types keep the account's value, JSON null included.
        ({"a": {"b": 1}}, {"a": [1]}, {"a": {"b": 1}}),
        ({"a": [1]}, {"a": {"b": 1}}, {"a": [1]}),
        ({"a": 1}, {"a": {"b": 1}}, {"a": 1}),
        ({"a": "s"}, {"a": ["s"]}, {"a": "s"}),
        ({"a": None}, {"a": 1}, {"a": None}),
        ({}, {"n": None}, {"n": None}),
        ({}, {}, {}),
        ({"k": 1}, {}, {"k": 1}),
    ],
)
async def test_merge_guest_unions_arrays_merges_objects_and_keeps_the_accounts_scalars(
    engine: AsyncEngine, account: Any, guest: Any, merged: Any
) -> None:
    assert await _one(engine, "jsonb_merge_guest", account, guest) == _canonical(merged)


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.choice(
        ["object", "object", "array", "scalar", "scalar"] if depth < 4 else ["scalar"]
    )
    if kind == "object":
        return {rng.choice("abcd"): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if kind == "array":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return rng.choice([0, 1, 2, 1.0, 2.5, "a", "b", "", True, False, None])


def _random_pairs(seed: int, count: int) -> list[tuple[Any, Any]]:
    rng = random.Random(seed)
    return [(_random_value(rng, 0), _random_value(rng, 0)) for _ in range(count)]


async def test_both_functions_agree_with_the_initial_migrations_bodies(
    engine: AsyncEngine,
) -> None:
    """0003 changed how the functions run, not what they return: 0001's bodies, created in a
    scratch schema of a transaction that is rolled back, give the same answers."""
    spec = importlib.util.spec_from_file_location("initial", MIGRATIONS / "0001_initial.py")
    assert spec is not None and spec.loader is not None
    initial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(initial)
    pairs = _random_pairs(seed=7396, count=400)
    async with engine.connect() as conn:
        new = {f: await _apply(conn, f, pairs) for f in ("jsonb_merge_patch", "jsonb_merge_guest")}
        # The old bodies call themselves unqualified, so they resolve to the scratch schema.
        await conn.execute(sa.text("CREATE SCHEMA merge_0001"))
        await conn.execute(sa.text("SET LOCAL search_path = merge_0001, public"))
        await conn.execute(sa.text(initial.MERGE_PATCH))
        await conn.execute(sa.text(initial.MERGE_GUEST))
        old = {f: await _apply(conn, f, pairs) for f in new}
        await conn.rollback()
    for function, answers in new.items():
        mismatches = [
            (pair, mine, theirs)
            for pair, mine, theirs in zip(pairs, answers, old[function], strict=True)
            if mine != theirs
        ]
        assert not mismatches, (function, mismatches[:3])
