"""Calling the application's synchronous hooks (CONTRACT §16): one signed POST, bounded in time.

Each call is ``{"type": "<hook>", "data": {…}}`` POSTed to ``ANONID_HOOK_URL``, signed per
Standard Webhooks with ``ANONID_HOOK_SECRET`` (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``), so the receiver verifies it exactly as it verifies anonid's webhooks.

Guarantees:
- the whole call (connecting, sending, waiting, reading) ends within ``ANONID_HOOK_TIMEOUT_MS``;
- only a 2xx answer whose body is a JSON object of at most ``MAX_ANSWER_BYTES`` counts as an
  answer; anything else (a timeout, a refused connection, another status, a redirect, too large,
  not JSON) is ``HookFailed``, which the caller turns into ``ANONID_HOOK_FAILURE``'s policy;
- redirects are not followed: a signed request goes only where the operator pointed it;
- no database connection is involved: callers hold none while they wait (except ``before_merge``,
  whose wait inside the merge's transaction is bounded by the same timeout).

The client is aiohttp's, not httpx's: a call is on the path of every access token it decorates,
and httpx spent about five times the CPU per call here (``bench/NOTES.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from standardwebhooks import Webhook

from app.platform.ids import new_id
from app.settings import Settings

log = logging.getLogger("anonid.hooks")

MAX_ANSWER_BYTES = 64 * 1024
MAX_CONNECTIONS = 100


class HookFailed(Exception):
    """The hook gave no usable answer in time; the message is for the log."""


class Hooks:
    """The hooks enabled in this process and the HTTP client that calls them. Without
    ``ANONID_HOOK_URL`` every flag is false and nothing else is built."""

    def __init__(self, settings: Settings) -> None:
        enabled = settings.hook_set
        self.before_user_created = "before_user_created" in enabled
        self.custom_claims = "custom_claims" in enabled
        self.before_merge = "before_merge" in enabled
        self.allow_on_failure = settings.hook_failure == "allow"
        self.timeout = settings.hook_timeout_ms / 1000
        self._url = settings.hook_url
        self._client: aiohttp.ClientSession | None = None
        self._webhook: Webhook | None = None
        if enabled and settings.hook_secret is not None:
            self._webhook = Webhook(settings.hook_secret.get_secret_value())

    def _session(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the event loop that is running then.
        if self._client is None:
            self._client = aiohttp.ClientSession(
                # Every connection is kept for reuse: under load a hook is called by as many
                # requests at once as the server handles, and a new connection costs a handshake.
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # Proxies from the environment are not for a call to the operator's own endpoint.
                trust_env=False,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._client

    async def call(self, hook: str, data: dict[str, Any]) -> dict[str, Any]:
        """The hook's answer (a JSON object), or ``HookFailed``."""
        assert self._webhook is not None and self._url is not None
        body = orjson.dumps({"type": hook, "data": data})
        now = datetime.now(UTC)
        message_id = f"msg_{new_id().hex}"
        headers = {
            "content-type": "application/json",
            "user-agent": "anonid-hooks",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(message_id, now, body.decode()),
        }
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._post(body, headers)
        except TimeoutError:
            raise _failed(started, "timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _failed(started, type(exc).__name__) from None
        return answer

    async def _post(self, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        assert self._url is not None
        session = self._session()
        async with session.post(
            self._url, data=body, headers=headers, allow_redirects=False
        ) as resp:
            if not 200 <= resp.status < 300:
                raise HookFailed(f"HTTP {resp.status}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise HookFailed(f"answer larger than {MAX_ANSWER_BYTES} bytes")
                chunks.append(chunk)
        try:
            answer = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise HookFailed("answer is not JSON") from None
        if not isinstance(answer, dict):
            raise HookFailed("answer is not a JSON object")
        return answer

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _failed(started: float, reason: str) -> HookFailed:
    elapsed = int((time.monotonic() - started) * 1000)
    return HookFailed(f"{reason} after {elapsed} ms")
