"""The long-lived objects of one process, built once at start and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.platform.pgpool import HotPool
from app.server_secrets import ServerSecrets
from app.sessions import CookieJar, KeyRing
from app.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine  # transactional: BEGIN … COMMIT around multi-statement requests
    autocommit: AsyncEngine  # its own pool; one statement is one transaction (one round trip)
    pool: HotPool  # the hot paths' statements (app.platform.pgpool), each its own transaction
    keys: KeyRing
    cookies: CookieJar
    server_secrets: ServerSecrets  # app.server_secrets: keys shared by every process
    extras: dict[str, Any] = field(default_factory=dict)
