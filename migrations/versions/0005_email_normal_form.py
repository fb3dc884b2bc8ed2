"""Addresses in one normal form computed in Python; uniqueness on ``email`` itself.

Until now addresses were compared with PostgreSQL's ``lower()``, which follows the database's
collation and disagrees with Python's (``İ``), so the rate limiter and the lookups keyed one
address differently. From here every stored address is ``app.lifecycle.addresses.email_key``
(NFC, Python's ``lower()`` of the local part, the IDNA A-label of the domain) and PostgreSQL only
compares with ``=``. This migration re-normalises ``users.email``, ``users.pending_email``,
``link_tokens.email`` and the ``to`` of emailed outbox rows, in batches, and swaps the unique
index on ``lower(email)`` for one on ``email``.

Collisions: two registered accounts whose addresses become the same normal form (possible only
for non-ASCII addresses: NFC/NFD twins, U-label/A-label twins, or case pairs ``lower()``
mapped apart) are not merged, renamed or dropped here, because either could be the real owner
and the other a look-alike. The migration refuses with the ids of the pairs, rolls back
entirely (all of Alembic's upgrade is one transaction), and can be run again once an operator
has deleted or changed one account of each pair.

Downgrade puts the ``lower(email)`` index back; addresses stay in their normal form (the
original spelling is not kept), which the old code reads as well.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from app.lifecycle.addresses import email_key

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

BATCH = 2000
SHOWN_COLLISIONS = 20


def upgrade() -> None:
    if context.is_offline_mode():
        raise RuntimeError("migration 0005 re-normalises addresses in Python: run it online")
    conn = op.get_bind()
    # Dropped first, so a row normalised early cannot trip over a row not yet normalised.
    op.drop_index("uq_users_email_lower", table_name="users")
    changed = _normalise_users(conn)
    changed += _normalise(
        conn,
        "SELECT token_hash AS k, email FROM link_tokens WHERE token_hash > :after"
        " ORDER BY token_hash LIMIT :n",
        "UPDATE link_tokens SET email = v.email"
        " FROM unnest(CAST(:keys AS bytea[]), CAST(:emails AS text[])) AS v(k, email)"
        " WHERE link_tokens.token_hash = v.k",
        first=b"",
    )
    changed += _normalise(
        conn,
        "SELECT id AS k, payload ->> 'to' AS email FROM outbox"
        " WHERE kind = 'email' AND id > :after ORDER BY id LIMIT :n",
        "UPDATE outbox SET payload = jsonb_set(payload, '{to}', to_jsonb(v.email))"
        " FROM unnest(CAST(:keys AS bigint[]), CAST(:emails AS text[])) AS v(k, email)"
        " WHERE outbox.id = v.k",
        first=0,
    )
    _refuse_collisions(conn)
    op.create_index("uq_users_email", "users", ["email"], unique=True)
    log.info("0005: %d stored addresses rewritten to their normal form", changed)


def downgrade() -> None:
    op.drop_index("uq_users_email", table_name="users")
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)


def _batches(conn: sa.Connection, select: str, first: Any) -> Iterator[list[sa.Row[Any]]]:
    """Keyset batches of ``select`` (which names its key ``k`` and orders by it)."""
    after = first
    while True:
        rows = list(conn.execute(sa.text(select), {"after": after, "n": BATCH}))
        if not rows:
            return
        yield rows
        after = rows[-1].k


def _normal(value: str | None) -> str | None:
    return None if value is None else email_key(value)


def _normalise(conn: sa.Connection, select: str, update: str, *, first: Any) -> int:
    """Rewrite the ``email`` column of every row ``select`` yields whose value is not normal."""
    changed = 0
    for rows in _batches(conn, select, first):
        stale = [(r.k, _normal(r.email)) for r in rows if r.email != _normal(r.email)]
        if stale:
            keys, emails = zip(*stale, strict=True)
            conn.execute(sa.text(update), {"keys": list(keys), "emails": list(emails)})
            changed += len(stale)
    return changed


def _normalise_users(conn: sa.Connection) -> int:
    changed = 0
    select = (
        "SELECT id AS k, email, pending_email FROM users WHERE id > :after"
        " AND (email IS NOT NULL OR pending_email IS NOT NULL) ORDER BY id LIMIT :n"
    )
    update = sa.text(
        "UPDATE users SET email = v.email, pending_email = v.pending_email"
        " FROM unnest(CAST(:keys AS uuid[]), CAST(:emails AS text[]), CAST(:pending AS text[]))"
        " AS v(k, email, pending_email) WHERE users.id = v.k"
    )
    for rows in _batches(conn, select, uuid.UUID(int=0)):
        stale = [
            r
            for r in rows
            if r.email != _normal(r.email) or r.pending_email != _normal(r.pending_email)
        ]
        if stale:
            conn.execute(
                update,
                {
                    "keys": [r.k for r in stale],
                    "emails": [_normal(r.email) for r in stale],
                    "pending": [_normal(r.pending_email) for r in stale],
                },
            )
            changed += len(stale)
    return changed


def _refuse_collisions(conn: sa.Connection) -> None:
    pairs = list(
        conn.execute(
            sa.text(
                "SELECT array_agg(id::text ORDER BY created_at, id) AS ids FROM users"
                " WHERE email IS NOT NULL GROUP BY email HAVING count(*) > 1 LIMIT :n"
            ),
            {"n": SHOWN_COLLISIONS},
        )
    )
    if pairs:
        shown = "; ".join(" and ".join(row.ids) for row in pairs)
        raise RuntimeError(
            f"migration 0005 refused: {len(pairs)}{'+' if len(pairs) == SHOWN_COLLISIONS else ''}"
            f" groups of accounts have addresses that are the same once normalised (users {shown})."
            " Nothing was changed. Delete or change the address of all but one account of each"
            " group, then migrate again."
        )
