"""An index that lists anonymous accounts in id order without walking the registered ones.

``GET /v1/admin/users?state=anonymous`` pages through accounts in id order. Without an index of
its own it walked the primary key and filtered: the oldest ids are mostly registered accounts
(guests that old have been culled or converted), so the first page read hundreds of thousands of
rows (p99 507 ms at 20 million accounts, bench/RESULTS.md). The partial index holds the anonymous
ids only; new guests append to its right edge (ids are UUIDv7), the cull and conversions remove
theirs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_users_anonymous_id", "users", ["id"], postgresql_where=sa.text("is_anonymous")
    )


def downgrade() -> None:
    op.drop_index("ix_users_anonymous_id", table_name="users")
