"""Sessions (CONTRACT §4): one row per sign-in, holding only hashes of its refresh tokens.

- ``id`` is the access token's ``sid``; ``user_id`` cascades with the account (the cull, an
  erase, a merged guest take their sessions with them). The primary key is ``(user_id, id)``:
  every lookup knows both (an access token has ``sub`` and ``sid``, a refresh token carries
  both), and the one index then also serves a user's sessions and the cascade, so a new guest
  writes one index entry fewer.
- ``family_hash`` is the SHA-256 of the session's family secret, which every refresh token of the
  session carries (``app.sessions.refresh``): it tells a spent token of this session (reuse: the
  session ends) from a made-up one (refused, nothing ends).
- ``live_hashes`` are the SHA-256 of the refresh tokens that may be redeemed now (one, or a few
  siblings issued inside the reuse interval); ``spent_hashes`` those rotated at ``rotated_at``,
  still accepted for ``ANONID_REFRESH_REUSE_SECONDS`` after it.
- ``last_used_at`` moves at every refresh; idle and absolute lifetimes are read from it and from
  ``created_at`` with the settings of the day, so changing a lifetime applies to live sessions.
  ``last_used_day`` (its UTC day) is what retention's index holds: it changes at most once a day,
  so a refresh that stays within the day changes no indexed column and, with the room the fill
  factor leaves in each page, is a HOT update that writes no index entry at all.
- ``ended_at`` / ``ended_reason``: logout, reuse, a session-version bump, ``DELETE
  /v1/me/sessions/{id}``.

Indexes: the primary key (a user's sessions, the cascade, a session), ``last_used_day`` and
``ended_at`` (partial) for retention, which removes ended and idle sessions in batches.

Upgrading a populated database adds an empty table and changes no existing row; a browser still
holding a version-1 cookie (one long-lived JWT with no ``sid``) gets a session row on its first
request (``app.api.deps.authenticate``; the README's upgrade note). Downgrade drops the table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, UUID

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
# Room in each page for the new versions of its rows: a refresh rewrites its session row.
FILLFACTOR = 70


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("last_used_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column(
            "last_used_day",
            sa.Date,
            nullable=False,
            server_default=sa.text("(now() AT TIME ZONE 'UTC')::date"),
        ),
        sa.Column("user_agent", sa.Text),
        sa.Column("family_hash", BYTEA, nullable=False),
        sa.Column("live_hashes", ARRAY(BYTEA), nullable=False),
        sa.Column("spent_hashes", ARRAY(BYTEA), nullable=False, server_default="{}"),
        sa.Column("rotated_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("ended_reason", sa.Text),
        sa.PrimaryKeyConstraint("user_id", "id", name="pk_sessions"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_sessions_user_id_users", ondelete="CASCADE"
        ),
    )
    # A storage parameter set by SQL: SQLAlchemy 2.0 (which pyproject allows) has no
    # postgresql_with on Table.
    op.execute(f"ALTER TABLE sessions SET (fillfactor = {FILLFACTOR})")
    op.create_index("ix_sessions_last_used_day", "sessions", ["last_used_day"])
    op.create_index(
        "ix_sessions_ended_at",
        "sessions",
        ["ended_at"],
        postgresql_where=sa.text("ended_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("sessions")
