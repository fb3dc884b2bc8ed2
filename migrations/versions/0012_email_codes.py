"""Passwordless (CONTRACT §6): one-time email codes beside the links, sign-in and address-change
links, and the ways an account can sign in.

- ``link_tokens`` gains a code: an email that carries a link carries its six-digit code in the same
  row (``code_hash``: HMAC-SHA256 keyed by the server secret ``email_codes`` over the row's token
  hash and the digits, so a bare hash of six digits is never stored), ``code_expires_at`` (the code
  lives ``ANONID_EMAIL_CODE_TTL_MINUTES``, the setup link it travels with a day) and
  ``code_attempts`` (dead after five). The row is one credential: using the link or the code ends
  both. Adding the columns rewrites nothing (a nullable column, and a constant default).
- Two more purposes: ``login`` (sign in by email) and ``email_change`` (a new address).
- ``anonid_sign_in_methods(user, has_password, has_email)``: the ``methods`` of a registered
  account's user object (CONTRACT §5), so every statement that returns a user returns them in the
  same round trip: ``password``, ``email``, ``passkey`` (migration 0013's table) and
  ``oidc:<provider>`` (0011's identities, each provider once). PL/pgSQL, whose plans are cached
  per connection; the callers skip it for guests (``app.lifecycle.users``). A later way to sign in
  replaces it to add its own.

Revision ID: 0012
Revises: 0013
Create Date: 2027-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import BYTEA

revision = "0012"
down_revision = "0013"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)

METHODS_FUNCTION = """
CREATE FUNCTION anonid_sign_in_methods(account uuid, has_password boolean, has_email boolean)
RETURNS text[] LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN array_remove(ARRAY[CASE WHEN has_password THEN 'password' END,
                              CASE WHEN has_email THEN 'email' END,
                              CASE WHEN EXISTS (SELECT FROM passkeys WHERE user_id = account)
                                   THEN 'passkey' END], NULL)
        || ARRAY(SELECT 'oidc:' || provider FROM identities WHERE user_id = account
                 GROUP BY provider ORDER BY min(created_at), provider);
END
$$;
"""


def upgrade() -> None:
    op.add_column("link_tokens", sa.Column("code_hash", BYTEA, nullable=True))
    op.add_column("link_tokens", sa.Column("code_expires_at", TS, nullable=True))
    op.add_column(
        "link_tokens",
        sa.Column("code_attempts", sa.SmallInteger(), nullable=False, server_default="0"),
    )
    op.create_check_constraint(
        "ck_link_tokens_code_expires",
        "link_tokens",
        "code_hash IS NULL OR code_expires_at IS NOT NULL",
    )
    op.drop_constraint("ck_link_tokens_purpose", "link_tokens", type_="check")
    op.create_check_constraint(
        "ck_link_tokens_purpose",
        "link_tokens",
        "purpose IN ('setup', 'reset', 'login', 'email_change')",
    )
    op.execute(METHODS_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION anonid_sign_in_methods(uuid, boolean, boolean)")
    # Sign-in and address-change links live minutes; the revision below has no room for them.
    op.execute("DELETE FROM link_tokens WHERE purpose IN ('login', 'email_change')")
    op.drop_constraint("ck_link_tokens_purpose", "link_tokens", type_="check")
    op.create_check_constraint(
        "ck_link_tokens_purpose", "link_tokens", "purpose IN ('setup', 'reset')"
    )
    op.drop_constraint("ck_link_tokens_code_expires", "link_tokens", type_="check")
    op.drop_column("link_tokens", "code_attempts")
    op.drop_column("link_tokens", "code_expires_at")
    op.drop_column("link_tokens", "code_hash")
