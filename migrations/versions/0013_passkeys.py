"""Passkeys (CONTRACT §14): WebAuthn credentials, their challenges, accounts made with a passkey.

- ``passkeys``: one row per WebAuthn credential of a user (credential id unique), with its COSE
  public key and the signature counter last seen; cascades with the user, indexed by user.
- ``webauthn_challenges``: one row per ceremony in flight, keyed by the challenge itself, bound to
  the session that asked (``register``: user, session version and session id) or to the browser
  that asked (``login``: SHA-256 of its short cookie, and of the ``X-Anonid-Challenge-Id`` the
  options carried). Consumed by one ``DELETE … RETURNING``, so a challenge is used at most once; expired
  rows go with retention.
- A registered account may now keep a passkey as its only way to sign in: the constraint trigger
  function of migration 0011 also accepts an account without address and identity when it has a
  passkey, and a trigger on ``passkeys`` keeps its last one from being removed behind the API's
  back. Rows already there are unchanged (no account has a passkey yet).

Revision ID: 0013
Revises: 0014
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import BYTEA, UUID

revision = "0013"
down_revision = "0014"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def _can_sign_in(passkeys_count: bool) -> str:
    """The constraint trigger function: that of migration 0011, with passkeys or without."""
    passkey_clause = (
        "\n          AND NOT EXISTS (SELECT 1 FROM passkeys p WHERE p.user_id = u.id)"
        if passkeys_count
        else ""
    )
    needs = (
        "an address, an identity or a passkey" if passkeys_count else "an address or an identity"
    )
    return f"""
CREATE OR REPLACE FUNCTION anonid_registered_can_sign_in() RETURNS trigger LANGUAGE plpgsql AS $$
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
          AND NOT EXISTS (SELECT 1 FROM identities i WHERE i.user_id = u.id){passkey_clause}
    ) THEN
        RAISE EXCEPTION 'a registered account needs {needs}'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ck_users_registered_can_sign_in';
    END IF;
    RETURN NULL;
END
$$;
"""


PASSKEYS_TRIGGER = """
CREATE CONSTRAINT TRIGGER ck_passkeys_registered_can_sign_in
    AFTER DELETE OR UPDATE OF user_id ON passkeys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION anonid_registered_can_sign_in()
"""

# Before this revision such an account could not be represented: the downgrade refuses (and so
# keeps everything) while one exists.
REFUSE_PASSKEY_ONLY_ACCOUNTS = """
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM users u
        WHERE NOT u.is_anonymous AND u.email IS NULL
          AND NOT EXISTS (SELECT 1 FROM identities i WHERE i.user_id = u.id)
    ) THEN
        RAISE EXCEPTION 'a registered account signs in with passkeys only'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ck_users_registered_can_sign_in';
    END IF;
END
$$;
"""


def upgrade() -> None:
    op.create_table(
        "passkeys",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("credential_id", BYTEA, nullable=False),
        sa.Column("public_key", BYTEA, nullable=False),
        sa.Column("sign_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("aaguid", sa.Text),
        sa.Column("backed_up", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("last_used_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_passkeys"),
        sa.UniqueConstraint("credential_id", name="uq_passkeys_credential_id"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_passkeys_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_passkeys_user_id", "passkeys", ["user_id"])
    op.create_table(
        "webauthn_challenges",
        sa.Column("challenge", BYTEA, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("user_id", UUID(as_uuid=True)),
        sa.Column("session_version", sa.Integer),
        sa.Column("session_id", UUID(as_uuid=True)),
        sa.Column("browser_hash", BYTEA),
        sa.Column("client_hash", BYTEA),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("challenge", name="pk_webauthn_challenges"),
        sa.CheckConstraint(
            "(purpose = 'register' AND user_id IS NOT NULL AND session_version IS NOT NULL"
            " AND session_id IS NOT NULL)"
            " OR (purpose = 'login' AND browser_hash IS NOT NULL AND client_hash IS NOT NULL)",
            name="ck_webauthn_challenges_bound",
        ),
    )
    op.create_index("ix_webauthn_challenges_expires_at", "webauthn_challenges", ["expires_at"])
    op.execute(_can_sign_in(passkeys_count=True))
    op.execute(PASSKEYS_TRIGGER)


def downgrade() -> None:
    op.execute(REFUSE_PASSKEY_ONLY_ACCOUNTS)
    op.execute("DROP TRIGGER ck_passkeys_registered_can_sign_in ON passkeys")
    op.execute(_can_sign_in(passkeys_count=False))
    op.drop_index("ix_webauthn_challenges_expires_at", table_name="webauthn_challenges")
    op.drop_table("webauthn_challenges")
    op.drop_index("ix_passkeys_user_id", table_name="passkeys")
    op.drop_table("passkeys")
