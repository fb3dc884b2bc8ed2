"""Rate limits with the ``limits`` package: per client IP, per email address for credentials,
and per session for profile data writes.

The storage is ``ANONID_RATE_LIMIT_STORAGE``: ``memory://`` for one process (``LocalCounters``,
whose cost per hit does not grow with the number of clients), ``redis://…`` shared by every
process. If Redis cannot be reached the limiter fails open with a warning: a broken
limiter must not take logins down with it. Limits are sliding window counters: at most the
limit in any fixed window, the previous window's count weighted by how much of it still overlaps.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import Any, cast
from uuid import UUID

from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from app.errors import AnonidError
from app.lifecycle.addresses import email_key
from app.platform.local_limits import LocalCounters
from app.settings import Settings

log = logging.getLogger("anonid.ratelimit")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
KEY_PREFIX = "anonid"


def client_ip(peer: str | None, forwarded_for: list[str], proxies: list[IpNetwork]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries to its left are
    whatever the client claimed and are never believed)."""
    if peer is None:
        return "unknown"
    current = peer
    if not proxies or not is_trusted_proxy(current, proxies):
        return current
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a malformed hop: stop at the last address a trusted proxy vouched for
        current = hop
        if not is_trusted_proxy(current, proxies):
            break
    return current


def ip_bucket(address: str) -> str:
    """The rate-limit bucket of a client address: an IPv6 client by its /64, the block one
    subscriber is usually given (counting each address would hand an attacker 2**64 buckets);
    an IPv4-mapped IPv6 address as the IPv4 address it is."""
    if ":" not in address:
        return address  # IPv4 (or "unknown"): no parsing on the hot path
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


def is_trusted_proxy(address: str, proxies: list[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


class RateLimiter:
    """The service's limits; ``hit_*`` raise ``rate_limited`` with ``Retry-After`` when exceeded."""

    def __init__(self, settings: Settings) -> None:
        self.proxies = settings.proxies
        self.anonymous_limits = parse_many(settings.anonymous_rate_limit)
        self.login_limits = parse_many(settings.login_rate_limit)
        self.data_limits = parse_many(settings.data_rate_limit)
        uri = settings.rate_limit_storage
        self.storage: Storage
        if uri.startswith("redis://"):
            # Short timeouts: when Redis is away, fail open quickly rather than stall the request.
            options: dict[str, Any] = {
                "implementation": "redispy",
                "key_prefix": KEY_PREFIX,
                "socket_connect_timeout": 1,
                "socket_timeout": 1,
            }
            self.storage = cast(Storage, storage_from_string("async+" + uri, **options))
        else:
            self.storage = LocalCounters()
        # A sliding window counter: two counters per key, O(1) per hit. The moving window keeps
        # every hit's timestamp, and its in-memory storage expires them through a thread on
        # nearly every hit, which cost the hot POST /v1/anonymous more than its statement.
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    def client(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_ip(peer, request.headers.getlist("x-forwarded-for"), self.proxies)

    async def hit_anonymous(self, peer: str | None, forwarded_for: list[str]) -> None:
        """One new anonymous account for this client (the ASGI peer and X-Forwarded-For)."""
        ip = client_ip(peer, forwarded_for, self.proxies)
        await self._hit(self.anonymous_limits, ("anonymous", "ip", ip_bucket(ip)))

    async def hit_credentials(self, request: Request, email: str | None) -> None:
        """One login, conversion or reset request, counted per client IP and per address."""
        keys = [("credentials", "ip", ip_bucket(self.client(request)))]
        if email:
            keys.append(("credentials", "email", email_key(email)))
        for key in keys:
            await self._hit(self.login_limits, key)

    async def hit_sign_in_challenge(self, request: Request) -> None:
        """One passkey sign-in challenge asked for by this client IP, under
        ``ANONID_ANONYMOUS_RATE_LIMIT``: like a new guest, a row anyone may make."""
        await self._hit(self.anonymous_limits, ("challenge", "ip", ip_bucket(self.client(request))))

    async def hit_console_sign_in(self, request: Request) -> None:
        """One attempt to sign in to the admin console with a key, counted per client IP
        under ``ANONID_LOGIN_RATE_LIMIT`` (a budget of its own, apart from users' logins)."""
        await self._hit(self.login_limits, ("console", "ip", ip_bucket(self.client(request))))

    async def hit_data(self, session_id: UUID) -> None:
        """One profile data write (``PATCH`` or ``PUT /v1/me/data``) for this session (its
        ``sid``: a rotation keeps it, so refreshing does not reset the count)."""
        await self._hit(self.data_limits, ("data", "session", str(session_id)))

    async def _hit(self, items: list[RateLimitItem], key: tuple[str, ...]) -> None:
        for item in items:
            try:
                allowed = await self.strategy.hit(item, *key)
                if allowed:
                    continue
                reset_at, _ = await self.strategy.get_window_stats(item, *key)
            except Exception as exc:  # storage unreachable: fail open, loudly
                log.warning("rate limit storage unavailable, not limiting: %s", exc)
                return
            retry_after = max(1, math.ceil(reset_at - time.time()))
            raise AnonidError("rate_limited", headers={"Retry-After": str(retry_after)})

    async def close(self) -> None:
        """Release the Redis connections, if any."""
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        if client is not None:
            try:
                await client.aclose()
            except Exception as exc:  # closing a broken connection must not fail shutdown
                log.debug("closing rate limit storage: %s", exc)
