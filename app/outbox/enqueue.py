"""Queue an email in the caller's transaction. Rendering happens here, so the row is self-contained."""

from __future__ import annotations

import secrets
from email.utils import make_msgid
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import orjson
import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.ext.asyncio import AsyncConnection

from app.settings import Settings

EMAIL_KINDS = (
    "conversion_setup",
    "conversion_already_registered",
    "password_reset",
    "password_changed",
    "security_alert",
)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "email"

_INSERT = sa.text(
    "INSERT INTO outbox (kind, user_id, payload) VALUES ('email', :user_id, CAST(:payload AS jsonb))"
    " RETURNING id"
)


@cache
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render_email(settings: Settings, kind: str, to: str, context: dict[str, Any]) -> dict[str, Any]:
    """Subject, text and HTML parts and headers of one email; links come only from settings."""
    assert kind in EMAIL_KINDS, kind
    env = _env()
    ctx = {"public_url": settings.public_url, **context}
    domain = urlsplit(settings.public_url).hostname or "localhost"
    return {
        "email_kind": kind,
        "to": to,
        "from": settings.mail_from,
        "subject": env.get_template(f"{kind}.subject.txt").render(ctx).strip(),
        "text": env.get_template(f"{kind}.txt").render(ctx),
        "html": env.get_template(f"{kind}.html").render(ctx),
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
    is passed to the templates ``{kind}.subject.txt``, ``{kind}.txt`` and ``{kind}.html``.
    """
    payload = render_email(settings, kind, to, context)
    row_id = await conn.scalar(
        _INSERT, {"user_id": user_id, "payload": orjson.dumps(payload).decode()}
    )
    assert row_id is not None
    return int(row_id)
