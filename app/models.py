"""The tables, as SQLAlchemy Core metadata with a constraint naming convention.

The migrations in ``migrations/versions`` are the source of truth for the schema; this module
mirrors them so queries can be built with Core and so a test can check the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB, UUID

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = sa.TIMESTAMP(timezone=True)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("username", sa.Text, unique=True),
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
    sa.CheckConstraint(
        "NOT is_anonymous OR (email IS NULL AND password_hash IS NULL)",
        name="anonymous_has_no_credentials",
    ),
    # A registered account has an address, an identity or a passkey: a deferred constraint
    # trigger (ck_users_registered_can_sign_in, migrations 0011 and 0013), since a check cannot
    # see other tables.
    sa.CheckConstraint("jsonb_typeof(data) = 'object'", name="data_is_object"),
)
# Addresses are stored in their one normal form (app.lifecycle.addresses), compared with "=".
sa.Index("uq_users_email", users.c.email, unique=True)
sa.Index(
    "ix_users_anonymous_updated_at",
    users.c.updated_at,
    postgresql_where=users.c.is_anonymous,
)
# state=anonymous pages in id order without walking the (older, registered) rest of the table.
sa.Index("ix_users_anonymous_id", users.c.id, postgresql_where=users.c.is_anonymous)
sa.Index(
    "ix_users_registered_updated_at",
    users.c.updated_at,
    postgresql_include=["id"],
    postgresql_where=sa.text("NOT is_anonymous"),
)
sa.Index(
    "ix_users_pending_until",
    users.c.pending_until,
    postgresql_include=["id", "updated_at"],
    postgresql_where=sa.text("is_anonymous AND pending_email IS NOT NULL"),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.Text, primary_key=True),
    sa.Column("private_pem", sa.Text, nullable=False),
    sa.Column("public_jwk", JSONB, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("retired_at", TS),
)

server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", BYTEA, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
)

link_tokens = sa.Table(
    "link_tokens",
    metadata,
    sa.Column("token_hash", BYTEA, primary_key=True),
    sa.Column(
        "user_id",
        UUID(as_uuid=True),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("used_at", TS),
    # The code the same email carries (migration 0012): using the link or the code ends both.
    sa.Column("code_hash", BYTEA),
    sa.Column("code_expires_at", TS),
    sa.Column("code_attempts", sa.SmallInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("purpose IN ('setup', 'reset', 'login', 'email_change')", name="purpose"),
    sa.CheckConstraint("code_hash IS NULL OR code_expires_at IS NOT NULL", name="code_expires"),
)
sa.Index(
    "ix_link_tokens_ended_at", sa.func.coalesce(link_tokens.c.used_at, link_tokens.c.expires_at)
)

# Provider accounts linked to users (CONTRACT §13); they go with the user.
identities = sa.Table(
    "identities",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "user_id",
        UUID(as_uuid=True),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("email", sa.Text),
    sa.Column("email_verified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("last_sign_in_at", TS),
    sa.UniqueConstraint("provider", "subject"),
)

# Authorization requests in flight, keyed by a SHA-256 of their ``state``; single use.
oauth_flows = sa.Table(
    "oauth_flows",
    metadata,
    sa.Column("state_hash", BYTEA, primary_key=True),
    sa.Column("browser_hash", BYTEA, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("code_verifier", sa.Text, nullable=False),
    sa.Column("nonce", sa.Text, nullable=False),
    # No foreign key: the callback checks that the starter is still as it was (id and version).
    sa.Column("user_id", UUID(as_uuid=True)),
    sa.Column("session_version", sa.Integer),
    sa.Column("return_to", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", TS, nullable=False, index=True),
)

# ALTCHA challenges whose solution created a guest (CONTRACT §16), keyed by the challenge (the
# SHA-256 its solution reproduces); kept until the challenge expires (app.hooks.challenge).
spent_challenges = sa.Table(
    "spent_challenges",
    metadata,
    sa.Column("challenge", BYTEA, primary_key=True),
    sa.Column("expires_at", TS, nullable=False, index=True),
)

# One row per sign-in (CONTRACT §4); ``id`` is the access token's ``sid``. Refresh tokens are
# kept only as SHA-256 hashes (app.sessions.refresh).
sessions = sa.Table(
    "sessions",
    metadata,
    # The primary key is (user_id, id): it also serves a user's sessions and the cascade.
    sa.Column(
        "user_id",
        UUID(as_uuid=True),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("last_used_at", TS, nullable=False, server_default=sa.func.now()),
    # The UTC day of last_used_at, for retention's index (changes at most daily: HOT refreshes).
    sa.Column(
        "last_used_day",
        sa.Date,
        nullable=False,
        server_default=sa.text("(now() AT TIME ZONE 'UTC')::date"),
        index=True,
    ),
    sa.Column("user_agent", sa.Text),
    sa.Column("family_hash", BYTEA, nullable=False),
    sa.Column("live_hashes", ARRAY(BYTEA), nullable=False),
    sa.Column("spent_hashes", ARRAY(BYTEA), nullable=False, server_default="{}"),
    sa.Column("rotated_at", TS),
    sa.Column("ended_at", TS),
    sa.Column("ended_reason", sa.Text),
    # fillfactor 70 is set by migration 0009 (SQLAlchemy 2.0 cannot say it here).
)
sa.Index(
    "ix_sessions_ended_at",
    sessions.c.ended_at,
    postgresql_where=sa.text("ended_at IS NOT NULL"),
)

# WebAuthn credentials (CONTRACT §14); they go with the user.
passkeys = sa.Table(
    "passkeys",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "user_id",
        UUID(as_uuid=True),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("credential_id", BYTEA, nullable=False, unique=True),
    sa.Column("public_key", BYTEA, nullable=False),  # COSE_Key, as the authenticator gave it
    sa.Column("sign_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("aaguid", sa.Text),
    sa.Column("backed_up", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("last_used_at", TS),
)

# WebAuthn ceremonies in flight, keyed by their challenge; single use, five minutes.
webauthn_challenges = sa.Table(
    "webauthn_challenges",
    metadata,
    sa.Column("challenge", BYTEA, primary_key=True),
    sa.Column("purpose", sa.Text, nullable=False),
    # register: the session that asked (no foreign keys, as oauth_flows: checked when consumed).
    sa.Column("user_id", UUID(as_uuid=True)),
    sa.Column("session_version", sa.Integer),
    sa.Column("session_id", UUID(as_uuid=True)),
    # login: SHA-256 of the browser's short cookie and of the X-Anonid-Challenge-Id.
    sa.Column("browser_hash", BYTEA),
    sa.Column("client_hash", BYTEA),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", TS, nullable=False, index=True),
    sa.CheckConstraint(
        "(purpose = 'register' AND user_id IS NOT NULL AND session_version IS NOT NULL"
        " AND session_id IS NOT NULL)"
        " OR (purpose = 'login' AND browser_hash IS NOT NULL AND client_hash IS NOT NULL)",
        name="bound",
    ),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    # No foreign key: events outlive the accounts they describe (user.culled, user.deleted).
    sa.Column("user_id", UUID(as_uuid=True), index=True),
    sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
)
sa.Index("ix_events_type_created_at", events.c.type, events.c.created_at)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    # Emails belong to a user and go with it; webhooks (user_id NULL) outlive deletions.
    sa.Column(
        "user_id",
        UUID(as_uuid=True),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        index=True,
    ),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("claimed_until", TS),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("sent_at", TS),
    sa.Column("failed_at", TS),
    # The language an email was written in (CONTRACT §15); NULL for webhooks.
    sa.Column("locale", sa.Text),
    sa.CheckConstraint("kind IN ('email', 'webhook')", name="kind"),
)
sa.Index(
    "ix_outbox_due",
    outbox.c.next_attempt_at,
    postgresql_where=sa.text("sent_at IS NULL AND failed_at IS NULL"),
)
sa.Index(
    "ix_outbox_sent_at",
    outbox.c.sent_at,
    postgresql_where=sa.text("sent_at IS NOT NULL"),
)
sa.Index(
    "ix_outbox_failed_at",
    outbox.c.failed_at,
    postgresql_include=["kind"],
    postgresql_where=sa.text("failed_at IS NOT NULL"),
)

# UTC days of the funnel, rolled up from events up to ``rolled_until`` (app.lifecycle.rollup);
# ``sealed`` once retention has begun removing that day's events.
daily_stats = sa.Table(
    "daily_stats",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("anonymous_created", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("conversions_started", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("converted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("merged", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("culled", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("sealed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rolled_until", TS, nullable=False),
    sa.Column("rolled_at", TS, nullable=False, server_default=sa.func.now()),
)

# One row: accounts per state and this month's active accounts, recounted by the worker
# (app.lifecycle.counts).
stats_counts = sa.Table(
    "stats_counts",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, server_default="1"),
    sa.Column("anonymous", sa.BigInteger, nullable=False),
    sa.Column("pending", sa.BigInteger, nullable=False),
    sa.Column("registered", sa.BigInteger, nullable=False),
    sa.Column("mau_month", sa.Text, nullable=False),
    sa.Column("mau_anonymous", sa.BigInteger, nullable=False),
    sa.Column("mau_registered", sa.BigInteger, nullable=False),
    sa.Column("refreshed_at", TS, nullable=False),
    sa.CheckConstraint("id = 1", name="one_row"),
)
