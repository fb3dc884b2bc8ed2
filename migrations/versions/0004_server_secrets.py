"""Server secrets: random keys shared by every process (app.server_secrets), first for the
hosted forms' CSRF tokens.

A new table only; no existing row changes. The service writes each secret on its first start
(``INSERT … ON CONFLICT DO NOTHING``), so the migration writes none.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import BYTEA

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("value", BYTEA, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("name", name="pk_server_secrets"),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
