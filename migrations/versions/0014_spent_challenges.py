"""Abuse protection (CONTRACT §16): ALTCHA solutions accepted once across every process.

- ``spent_challenges``: one row per solved challenge that created a guest, keyed by the
  challenge itself (the SHA-256 the solution reproduces, 32 bytes), with the moment the challenge
  expires. ``POST /v1/anonymous`` inserts it with ``ON CONFLICT DO NOTHING`` in the statement that
  creates the guest, so of two requests carrying one solution, in any processes, exactly one
  creates a guest. A row is needed only until its challenge expires (an expired solution is
  refused before the database is asked): retention removes it then, walking ``expires_at``.

A new table: upgrading a populated database touches no existing row.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import BYTEA

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spent_challenges",
        sa.Column("challenge", BYTEA, nullable=False),
        sa.Column("expires_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("challenge", name="pk_spent_challenges"),
    )
    op.create_index("ix_spent_challenges_expires_at", "spent_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_table("spent_challenges")
