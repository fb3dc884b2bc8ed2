"""Sign in with a provider (CONTRACT §13): identities, OAuth flow states, accounts without address.

- ``identities``: one row per provider account linked to a user (``provider``, ``subject`` unique
  together), with the address the provider gave and whether it said it was verified; cascades
  with the user. Indexed by user, so deleting a user (the cull) finds its identities.
- ``oauth_flows``: one row per authorization request, keyed by a SHA-256 of its ``state``, with
  the PKCE verifier, the nonce, who started it and where it returns; consumed by one
  ``DELETE … RETURNING``, so a state is redeemed at most once. Expired rows go with retention.
- A registered account no longer needs an address: the check ``is_anonymous OR email IS NOT NULL``
  becomes a deferred constraint trigger that accepts a registered account without an address
  when it has an identity, so the account always keeps a way to sign in. Rows already there all
  have addresses, so the upgrade of a populated database changes none of them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import BYTEA, UUID

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)

# A registered account without an address must keep another way to sign in. Checked at commit
# (DEFERRABLE INITIALLY DEFERRED), so a transaction may create the account and then its identity,
# or swap one identity for another; the WHEN clause keeps it off every other write to users.
CAN_SIGN_IN_FUNCTION = """
CREATE FUNCTION anonid_registered_can_sign_in() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    account uuid;
BEGIN
    -- Each branch names only fields of its own table's row (plpgsql resolves them as it runs).
    IF TG_TABLE_NAME = 'users' THEN
        account := NEW.id;
    ELSE
        account := OLD.user_id;
    END IF;
    IF EXISTS (
        SELECT 1 FROM users u
        WHERE u.id = account AND NOT u.is_anonymous AND u.email IS NULL
          AND NOT EXISTS (SELECT 1 FROM identities i WHERE i.user_id = u.id)
    ) THEN
        RAISE EXCEPTION 'a registered account needs an address or an identity'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ck_users_registered_can_sign_in';
    END IF;
    RETURN NULL;
END
$$;
"""

USERS_TRIGGER = """
CREATE CONSTRAINT TRIGGER ck_users_registered_can_sign_in
    AFTER INSERT OR UPDATE OF is_anonymous, email ON users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NOT NEW.is_anonymous AND NEW.email IS NULL)
    EXECUTE FUNCTION anonid_registered_can_sign_in()
"""

IDENTITIES_TRIGGER = """
CREATE CONSTRAINT TRIGGER ck_identities_registered_can_sign_in
    AFTER DELETE OR UPDATE OF user_id ON identities
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION anonid_registered_can_sign_in()
"""


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("email_verified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("last_sign_in_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_identities"),
        sa.UniqueConstraint("provider", "subject", name="uq_identities_provider_subject"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_identities_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_identities_user_id", "identities", ["user_id"])
    op.create_table(
        "oauth_flows",
        sa.Column("state_hash", BYTEA, nullable=False),
        sa.Column("browser_hash", BYTEA, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("code_verifier", sa.Text, nullable=False),
        sa.Column("nonce", sa.Text, nullable=False),
        sa.Column("user_id", UUID(as_uuid=True)),
        sa.Column("session_version", sa.Integer),
        sa.Column("return_to", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name="pk_oauth_flows"),
    )
    op.create_index("ix_oauth_flows_expires_at", "oauth_flows", ["expires_at"])
    op.drop_constraint("ck_users_registered_has_email", "users", type_="check")
    op.execute(CAN_SIGN_IN_FUNCTION)
    op.execute(USERS_TRIGGER)
    op.execute(IDENTITIES_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER ck_identities_registered_can_sign_in ON identities")
    op.execute("DROP TRIGGER ck_users_registered_can_sign_in ON users")
    op.execute("DROP FUNCTION anonid_registered_can_sign_in()")
    # Fails (and so keeps everything) while a registered account has no address: such an account
    # could not be represented before this revision.
    op.create_check_constraint(
        "ck_users_registered_has_email", "users", "is_anonymous OR email IS NOT NULL"
    )
    op.drop_index("ix_oauth_flows_expires_at", table_name="oauth_flows")
    op.drop_table("oauth_flows")
    op.drop_index("ix_identities_user_id", table_name="identities")
    op.drop_table("identities")
