"""The long-lived objects of one process, built once at start and shared by every request."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.hooks.client import Hooks
from app.platform.db import Topology, single_statement
from app.platform.pgpool import HotPool
from app.server_secrets import ServerSecrets
from app.sessions.access import AccessTokens
from app.sessions.cookies import CookieJar
from app.sessions.keys import KeyRing
from app.settings import Settings


@dataclass
class Services:
    settings: Settings
    # The one pool (ANONID_DATABASE_URL, ANONID_DATABASE_POOL_SIZE): transactions (BEGIN … COMMIT),
    # single statements (`single_statement`) and, through `pool`, the hot paths.
    engine: AsyncEngine
    pool: HotPool  # the hot paths' statements (app.platform.pgpool) on the engine's connections
    topology: Topology
    direct: AsyncEngine | None  # one direct connection, for the cull's lock (app.platform.db)
    keys: KeyRing  # the signing keys and the JWKS
    access: AccessTokens  # access tokens signed and verified with them
    cookies: CookieJar
    server_secrets: ServerSecrets  # app.server_secrets: keys shared by every process
    hooks: Hooks  # app.hooks: the application's synchronous hooks (none without a hook URL)
    extras: dict[str, Any] = field(default_factory=dict)

    def single_statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection of the one pool on which each statement is its own transaction."""
        return single_statement(self.engine)
