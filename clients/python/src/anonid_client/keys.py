"""anonid's public signing keys (its JWKS), fetched over HTTP and cached by ``kid``.

The set is kept ``max_age`` seconds. A ``kid`` it does not hold may mean anonid rotated its keys,
so the set is fetched again, but at most once every ``retry_seconds``: a stream of tokens with
made-up ``kid``s never turns into a stream of requests to anonid. A failed fetch keeps the keys
already known and is not retried sooner either.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
from jwt import PyJWK, PyJWKError

from anonid_client.errors import InvalidSession, Unavailable

log = logging.getLogger("anonid_client")

USER_AGENT = "anonid-client/0.1"
_HEADERS = {"User-Agent": USER_AGENT, "Accept": "application/json"}


def usable_keys(document: Any) -> dict[str, Any]:
    """The P-256 signing keys of a JWKS document, by ``kid``; every other entry is skipped."""
    keys: dict[str, Any] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("kty") != "EC" or entry.get("crv") != "P-256":
            continue
        if entry.get("alg", "ES256") != "ES256" or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry["kid"]] = PyJWK(entry, algorithm="ES256").key
        except PyJWKError:
            continue
    return keys


class KeySet:
    """The keys at ``url``, fetched on first use and as described in the module docstring."""

    def __init__(
        self, url: str, *, max_age: float = 300, retry_seconds: float = 30, timeout: float = 5
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.retry_seconds = retry_seconds
        self.timeout = timeout
        self.fetches = 0
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # monotonic time of the last good fetch
        self._failed_at: float | None = None  # of the last failed one
        self._unknown_at: float | None = None  # of the last fetch an unknown kid caused
        self._lock = threading.Lock()
        self._inflight: asyncio.Task[None] | None = None

    def key(self, kid: str) -> Any:
        """The public key for ``kid``, fetching the set (blocking) when due."""
        with self._lock:
            if self._due(kid):
                self._begin(kid)
                try:
                    with httpx.Client(timeout=self.timeout, headers=_HEADERS) as client:
                        self._store(client.get(self.url))
                except (httpx.HTTPError, ValueError) as exc:
                    self._failed(exc)
            return self._found(kid)

    async def key_async(self, kid: str) -> Any:
        """The public key for ``kid``, fetching the set without blocking the event loop. Callers
        that need a fetch while one is under way wait for that one."""
        loop = asyncio.get_running_loop()
        task = self._inflight
        if task is not None and (task.done() or task.get_loop() is not loop):
            task = self._inflight = None
        if task is None and self._due(kid):
            self._begin(kid)
            task = self._inflight = loop.create_task(self._fetch_async())
        if task is not None:
            await asyncio.shield(task)
        return self._found(kid)

    async def _fetch_async(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout, headers=_HEADERS) as client:
                self._store(await client.get(self.url))
        except (httpx.HTTPError, ValueError) as exc:
            self._failed(exc)

    def _due(self, kid: str) -> bool:
        now = time.monotonic()
        if self._failed_at is not None and now - self._failed_at < self.retry_seconds:
            return False
        if self._fetched_at is None or now - self._fetched_at >= self.max_age:
            return True
        if kid in self._keys:
            return False
        return self._unknown_at is None or now - self._unknown_at >= self.retry_seconds

    def _begin(self, kid: str) -> None:
        if self._fetched_at is not None and kid not in self._keys:
            self._unknown_at = time.monotonic()
        self.fetches += 1

    def _store(self, response: httpx.Response) -> None:
        response.raise_for_status()
        self._keys = usable_keys(response.json())
        self._fetched_at = time.monotonic()
        self._failed_at = None

    def _failed(self, exc: Exception) -> None:
        self._failed_at = time.monotonic()
        log.warning("cannot fetch anonid's keys from %s: %s", self.url, exc)

    def _found(self, kid: str) -> Any:
        key = self._keys.get(kid)
        if key is None:
            if self._fetched_at is None:
                raise Unavailable("anonid's signing keys could not be fetched.")
            raise InvalidSession("The token was signed by a key anonid does not publish.")
        return key
