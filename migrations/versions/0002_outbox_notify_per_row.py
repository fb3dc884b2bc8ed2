"""Outbox notification per inserted row, so a statement that inserts no outbox row notifies nobody.

The statement-level trigger of 0001 fired for every INSERT … SELECT into the outbox, including the
event statements' webhook CTE when no webhook URL is configured (zero rows): every new anonymous
account paid a NOTIFY (a lock on the notification queue at commit) and woke every outbox worker
for nothing. A row-level trigger fires only for real rows; PostgreSQL delivers identical
notifications of one transaction once, so several rows still wake a worker once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH ROW EXECUTE FUNCTION anonid_outbox_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION anonid_outbox_notify()"
    )
