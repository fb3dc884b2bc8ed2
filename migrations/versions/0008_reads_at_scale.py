"""Reads that stay cheap at scale: anonymous ids in their own index, events rolled up to now.

- ``GET /v1/admin/users?state=anonymous`` pages through accounts in id order. Without an index
  of its own it walked the primary key and filtered: the oldest ids are mostly registered
  accounts (guests that old have been culled or converted), so the first page read hundreds of
  thousands of rows (p99 507 ms at 20 million accounts, bench/RESULTS.md). The partial index
  holds the anonymous ids only; new guests append to its right edge (ids are UUIDv7).
- The rollup now reaches the start of the oldest open transaction instead of stopping ten
  minutes back (``app.lifecycle.rollup``), so the trigger that counts an event inserted into an
  already rolled-up range must fire for any event dated before its own transaction: ``WHEN
  (NEW.created_at < now())``. The app stamps its events ``now()``, so it never fires for them.

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

_BACKDATED = """
CREATE TRIGGER events_backdated AFTER INSERT ON events FOR EACH ROW
    WHEN (NEW.created_at < now(){grace})
    EXECUTE FUNCTION anonid_daily_stats_adjust()
"""


def upgrade() -> None:
    op.create_index(
        "ix_users_anonymous_id", "users", ["id"], postgresql_where=sa.text("is_anonymous")
    )
    op.execute("DROP TRIGGER events_backdated ON events")
    op.execute(_BACKDATED.format(grace=""))


def downgrade() -> None:
    op.execute("DROP TRIGGER events_backdated ON events")
    op.execute(_BACKDATED.format(grace=" - interval '10 minutes'"))
    op.drop_index("ix_users_anonymous_id", table_name="users")
