"""Initial schema: users, signing keys, link tokens, events, outbox and the JSON merge functions.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)

# RFC 7396 JSON Merge Patch, applied inside PostgreSQL so a PATCH is one atomic UPDATE.
MERGE_PATCH = """
CREATE FUNCTION jsonb_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    result jsonb;
    k text;
    v jsonb;
BEGIN
    IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    IF target IS NULL OR jsonb_typeof(target) <> 'object' THEN
        result := '{}'::jsonb;
    ELSE
        result := target;
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            result := result - k;
        ELSE
            result := result || jsonb_build_object(k, jsonb_merge_patch(result -> k, v));
        END IF;
    END LOOP;
    RETURN result;
END
$$;
"""

# Merge on login: objects merge recursively, arrays are unioned with the account's items first,
# scalars (and mismatched types) keep the account's value.
MERGE_GUEST = """
CREATE FUNCTION jsonb_merge_guest(account jsonb, guest jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    result jsonb;
    k text;
    v jsonb;
    item jsonb;
BEGIN
    IF account IS NULL THEN
        RETURN guest;
    END IF;
    IF guest IS NULL THEN
        RETURN account;
    END IF;
    IF jsonb_typeof(account) = 'object' AND jsonb_typeof(guest) = 'object' THEN
        result := account;
        FOR k, v IN SELECT * FROM jsonb_each(guest) LOOP
            result := result || jsonb_build_object(k, jsonb_merge_guest(account -> k, v));
        END LOOP;
        RETURN result;
    END IF;
    IF jsonb_typeof(account) = 'array' AND jsonb_typeof(guest) = 'array' THEN
        result := account;
        FOR item IN SELECT value FROM jsonb_array_elements(guest) LOOP
            IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(result) AS r(value) WHERE r.value = item) THEN
                result := result || jsonb_build_array(item);
            END IF;
        END LOOP;
        RETURN result;
    END IF;
    RETURN account;
END
$$;
"""

# Wake outbox workers at commit time; NOTIFY inside a transaction is delivered only if it commits.
OUTBOX_NOTIFY = """
CREATE FUNCTION anonid_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('anonid_outbox', '');
    RETURN NULL;
END
$$;
"""

OUTBOX_TRIGGER = """
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION anonid_outbox_notify();
"""


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("username", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("is_anonymous", sa.Boolean, nullable=False),
        sa.Column("data", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("password_hash", sa.Text),
        sa.Column("session_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("pending_email", sa.Text),
        sa.Column("pending_until", TS),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("converted_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.CheckConstraint(
            "NOT is_anonymous OR (email IS NULL AND password_hash IS NULL)",
            name="ck_users_anonymous_has_no_credentials",
        ),
        sa.CheckConstraint(
            "is_anonymous OR email IS NOT NULL", name="ck_users_registered_has_email"
        ),
        sa.CheckConstraint("jsonb_typeof(data) = 'object'", name="ck_users_data_is_object"),
    )
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)
    op.create_index(
        "ix_users_anonymous_updated_at",
        "users",
        ["updated_at"],
        postgresql_where=sa.text("is_anonymous"),
    )

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text, nullable=False),
        sa.Column("private_pem", sa.Text, nullable=False),
        sa.Column("public_jwk", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("retired_at", TS),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )

    op.create_table(
        "link_tokens",
        sa.Column("token_hash", BYTEA, nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS),
        sa.PrimaryKeyConstraint("token_hash", name="pk_link_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_link_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.CheckConstraint("purpose IN ('setup', 'reset')", name="ck_link_tokens_purpose"),
    )
    op.create_index("ix_link_tokens_user_id", "link_tokens", ["user_id"])

    op.create_table(
        "events",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("user_id", UUID(as_uuid=True)),
        sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_user_id", "events", ["user_id"])
    op.create_index("ix_events_type_created_at", "events", ["type", "created_at"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("user_id", UUID(as_uuid=True)),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("claimed_until", TS),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", TS),
        sa.Column("failed_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_outbox_user_id_users", ondelete="CASCADE"
        ),
        sa.CheckConstraint("kind IN ('email', 'webhook')", name="ck_outbox_kind"),
    )
    op.create_index("ix_outbox_user_id", "outbox", ["user_id"])
    op.create_index(
        "ix_outbox_due",
        "outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("sent_at IS NULL AND failed_at IS NULL"),
    )

    op.execute(MERGE_PATCH)
    op.execute(MERGE_GUEST)
    op.execute(OUTBOX_NOTIFY)
    op.execute(OUTBOX_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS anonid_outbox_notify()")
    op.execute("DROP FUNCTION IF EXISTS jsonb_merge_guest(jsonb, jsonb)")
    op.execute("DROP FUNCTION IF EXISTS jsonb_merge_patch(jsonb, jsonb)")
    op.drop_table("outbox")
    op.drop_table("events")
    op.drop_table("link_tokens")
    op.drop_table("signing_keys")
    op.drop_table("users")
