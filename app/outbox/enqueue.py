"""Queue an email in the caller's transaction. Rendering happens here, so the row is self-contained.

An email is written in the language of the request that caused it (CONTRACT §7, §15: its
``?lang=`` or ``Accept-Language``, see ``app.platform.i18n``), else ``ANONID_DEFAULT_LOCALE``; the
language is stored with the row (``outbox.locale``) and sent as ``Content-Language``.
"""

from __future__ import annotations

import secrets
from email.utils import make_msgid
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.platform.i18n import request_language
from app.platform.templating import render
from app.settings import Settings

EMAIL_KINDS = (
    "conversion_setup",
    "conversion_already_registered",
    "password_reset",
    "password_changed",
    "security_alert",
    "login_code",
    "email_change",
    "email_changed",
)

_INSERT = sa.text(
    "INSERT INTO outbox (kind, user_id, payload, locale)"
    " VALUES ('email', :user_id, CAST(:payload AS jsonb), :locale) RETURNING id"
)


def render_email(
    settings: Settings, kind: str, to: str, context: dict[str, Any], lang: str | None = None
) -> dict[str, Any]:
    """Subject, text and HTML parts and headers of one email in ``lang`` (default: the
    request's language); links come only from settings. Templates: ``email/{kind}.subject.txt``,
    ``email/{kind}.txt``, ``email/{kind}.html``."""
    assert kind in EMAIL_KINDS, kind
    lang = lang or request_language(settings.default_locale)
    ctx = {"public_url": settings.public_url, **context}
    domain = urlsplit(settings.public_url).hostname or "localhost"

    def part(suffix: str) -> str:
        return render(settings, f"email/{kind}{suffix}", lang, ctx)

    return {
        "email_kind": kind,
        "to": to,
        "from": settings.mail_from,
        "subject": " ".join(part(".subject.txt").split()),
        "text": part(".txt"),
        "html": part(".html"),
        "language": lang,
        "message_id": make_msgid(idstring=secrets.token_hex(8), domain=domain),
    }


async def enqueue_email(
    conn: AsyncConnection,
    settings: Settings,
    *,
    kind: str,
    to: str,
    user_id: UUID | None,
    context: dict[str, Any],
) -> int:
    """Write one email to the outbox in the caller's transaction; returns the outbox row id.

    ``user_id`` ties the email to an account so it is deleted with it (cull, erase); ``context``
    is passed to the templates ``email/{kind}.subject.txt``, ``.txt`` and ``.html``.
    """
    payload = render_email(settings, kind, to, context)
    row_id = await conn.scalar(
        _INSERT,
        {
            "user_id": user_id,
            "payload": orjson.dumps(payload).decode(),
            "locale": payload["language"],
        },
    )
    assert row_id is not None
    return int(row_id)
