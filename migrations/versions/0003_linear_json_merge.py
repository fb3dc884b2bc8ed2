"""The JSON merge functions in one pass: linear in the size of their inputs, not quadratic.

0001's bodies rebuilt the whole document once per key of the patch (``result || …`` copies it),
and the merge on login also searched the growing result once per array item of the guest: a
patch of 20,000 keys cost PostgreSQL 15 s, 2,000 array items on each side of a merge 2.5 s. Here
each object is rebuilt once, by ``jsonb_object_agg`` over the union of both sides' keys (key
lookups in a jsonb object are binary searches), recursion goes only where both sides hold an
object (or, for the merge, both an array), and the array union is one anti-join and one
``DISTINCT ON``, which PostgreSQL hashes or sorts. Semantics are 0001's exactly: RFC 7396 for the
patch; for the merge, objects merge recursively, arrays keep every item of the account's, in its
order, then add the guest's items the account lacks, in the guest's order, each once, and any
other pair keeps the account's value. Figures: ``bench/json_merge.py``, the commit message.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# RFC 7396: a non-object patch replaces the target; an object patch removes the target's keys it
# maps to null, merges (recursively) the keys it maps to objects, and sets all others.
MERGE_PATCH = """
CREATE OR REPLACE FUNCTION jsonb_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    IF target IS NULL OR jsonb_typeof(target) <> 'object' THEN
        target := '{}'::jsonb;
    END IF;
    RETURN COALESCE(
        (SELECT jsonb_object_agg(merged.key, merged.value)
         FROM (
             SELECT t.key, t.value
             FROM jsonb_each(target) AS t
             WHERE NOT patch ? t.key
             UNION ALL
             SELECT p.key,
                    CASE WHEN jsonb_typeof(p.value) = 'object'
                         THEN jsonb_merge_patch(target -> p.key, p.value)
                         ELSE p.value END
             FROM jsonb_each(patch) AS p
             WHERE jsonb_typeof(p.value) <> 'null'
         ) AS merged),
        '{}'::jsonb);
END
$$;
"""

MERGE_GUEST = """
CREATE OR REPLACE FUNCTION jsonb_merge_guest(account jsonb, guest jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF account IS NULL THEN
        RETURN guest;
    END IF;
    IF guest IS NULL THEN
        RETURN account;
    END IF;
    IF jsonb_typeof(account) = 'object' AND jsonb_typeof(guest) = 'object' THEN
        RETURN COALESCE(
            (SELECT jsonb_object_agg(merged.key, merged.value)
             FROM (
                 SELECT a.key,
                        CASE WHEN guest ? a.key
                                  AND jsonb_typeof(a.value) IN ('object', 'array')
                                  AND jsonb_typeof(a.value) = jsonb_typeof(guest -> a.key)
                             THEN jsonb_merge_guest(a.value, guest -> a.key)
                             ELSE a.value END
                 FROM jsonb_each(account) AS a
                 UNION ALL
                 SELECT g.key, g.value
                 FROM jsonb_each(guest) AS g
                 WHERE NOT account ? g.key
             ) AS merged (key, value)),
            '{}'::jsonb);
    END IF;
    IF jsonb_typeof(account) = 'array' AND jsonb_typeof(guest) = 'array' THEN
        RETURN account || COALESCE(
            (SELECT jsonb_agg(added.value ORDER BY added.position)
             FROM (
                 SELECT DISTINCT ON (g.value) g.value, g.position
                 FROM jsonb_array_elements(guest) WITH ORDINALITY AS g (value, position)
                 WHERE NOT EXISTS (
                     SELECT FROM jsonb_array_elements(account) AS a (value)
                     WHERE a.value = g.value
                 )
                 ORDER BY g.value, g.position
             ) AS added),
            '[]'::jsonb);
    END IF;
    RETURN account;
END
$$;
"""


def _initial() -> object:
    """0001's module, for the bodies a downgrade puts back."""
    path = Path(__file__).with_name("0001_initial.py")
    spec = importlib.util.spec_from_file_location("anonid_migration_0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(MERGE_PATCH)
    op.execute(MERGE_GUEST)


def downgrade() -> None:
    initial = _initial()
    for body in (initial.MERGE_PATCH, initial.MERGE_GUEST):  # type: ignore[attr-defined]
        op.execute(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
