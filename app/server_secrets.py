"""Server secrets: random keys shared by every process, kept in the database like the signing keys.

Each is a named row of ``server_secrets``, written once with ``SECRET_BYTES`` random bytes
(``INSERT … ON CONFLICT DO NOTHING``, then read back, so processes that start together all end up
with the one value that won) and loaded at start into ``Services.server_secrets``. They never
leave the database and the process: no log line, response or export carries one.

Reusable: ``csrf`` keys the hosted forms' (and the console's) tokens, ``console`` signs the admin
console's session cookie (``app.admin.session``), ``altcha`` keys the proof-of-work challenges
(``app.hooks.challenge``), ``email_codes`` keys the hashes of one-time email codes
(``app.credentials.email_codes``); a later feature that needs a key of its own adds its name to
``NAMES`` and reads ``svc.server_secrets[name]``. Never reuse one secret for two purposes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

NAMES = ("csrf", "console", "altcha", "email_codes")
SECRET_BYTES = 32

_CREATE = sa.text(
    "INSERT INTO server_secrets (name, value) VALUES (:name, :value) ON CONFLICT (name) DO NOTHING"
)
_READ = sa.text("SELECT name, value FROM server_secrets WHERE name = ANY(:names)")


class ServerSecrets:
    """The loaded secrets by name; an unknown name is a ``KeyError`` (a programming error), and
    the values stay out of ``repr`` so they cannot reach a log by accident."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, bytes]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> bytes:
        return self._values[name]

    def __repr__(self) -> str:
        return f"ServerSecrets({sorted(self._values)})"


async def load_server_secrets(conn: AsyncConnection, names: Iterable[str] = NAMES) -> ServerSecrets:
    """Every named secret, each created with a fresh random value if it does not exist yet; the
    value already in the database always wins. Does not commit."""
    wanted = sorted(set(names))
    await conn.execute(
        _CREATE, [{"name": n, "value": secrets.token_bytes(SECRET_BYTES)} for n in wanted]
    )
    rows = (await conn.execute(_READ, {"names": wanted})).all()
    return ServerSecrets({row.name: bytes(row.value) for row in rows})
