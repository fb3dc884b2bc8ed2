"""The language of each queued email: ``outbox.locale``.

An email is written in the language of the request that caused it (CONTRACT §7, §15); the row
keeps that language beside its rendered parts, so an operator (the console's outbox page) can
see which language a delivery was in. Webhooks and rows queued before this revision have none.
Adding a nullable column without a default rewrites nothing: instant on any size of outbox.

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("locale", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "locale")
