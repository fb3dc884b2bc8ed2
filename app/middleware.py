"""The request guard: plain ASGI (no BaseHTTPMiddleware) for CSRF, media types and body size.

It runs before routing so a refused request costs no database work, and it buffers request
bodies up to a hard limit so an oversized or endless body is answered with 413, never a 5xx.

``CORS`` is Starlette's CORS middleware with a cheaper path for requests that carry no
``Origin`` (no CORS request at all), which only get ``Vary: Origin``.
"""

from __future__ import annotations

from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_bytes
from app.errors import ERRORS

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES = frozenset({"application/json"})
MERGE_PATCH_TYPES = frozenset({"application/json", "application/merge-patch+json"})
MAX_BODY_BYTES = 1024 * 1024


def _origin_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


class RequestGuard:
    def __init__(
        self, app: ASGIApp, *, cookie_name: str, allowed_origins: frozenset[str], data_max: int
    ) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self._cookie_bytes = cookie_name.encode()
        self.allowed_origins = allowed_origins
        # Room for a merge patch that removes much of a document, but bounded.
        self.max_body = max(MAX_BODY_BYTES, 2 * data_max)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE:
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key, value)
        path: str = scope["path"]

        refusal = self._csrf(scope["method"], path, headers)
        if refusal is None:
            refusal = self._media_type(scope["method"], path, headers)
        if refusal is not None:
            await _send_error(send, refusal)
            return

        body = await self._read_body(receive, headers)
        if body is None:
            code = "data_too_large" if path.startswith("/v1/me/data") else "payload_too_large"
            await _send_error(send, code)
            return

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _csrf(self, method: str, path: str, headers: dict[bytes, bytes]) -> str | None:
        cookie_auth = b"authorization" not in headers and self._has_session_cookie(headers)
        login = path == "/v1/login" and method == "POST"
        if not (cookie_auth or login):
            return None
        origin_header = headers.get(b"origin") or headers.get(b"referer")
        if origin_header is not None:
            origin = _origin_of(origin_header.decode("latin-1"))
            # Under "Referrer-Policy: no-referrer" (the hosted pages) a browser sends
            # "Origin: null" with the page's own form posts; Sec-Fetch-Site, which no page can
            # set, still says whether the post came from this very origin.
            own_page = origin_header == b"null" and (
                headers.get(b"sec-fetch-site", b"").lower() == b"same-origin"
            )
            if origin not in self.allowed_origins and not own_page:
                return "csrf_rejected"
        if cookie_auth and headers.get(b"sec-fetch-site", b"").lower() == b"cross-site":
            return "csrf_rejected"
        return None

    def _has_session_cookie(self, headers: dict[bytes, bytes]) -> bool:
        raw = headers.get(b"cookie")
        if not raw or self._cookie_bytes not in raw:
            return False
        try:
            jar: SimpleCookie = SimpleCookie(raw.decode("latin-1"))
        except CookieError:
            return True  # unparseable but mentions our cookie: treat it as present (safer)
        return self.cookie_name in jar and bool(jar[self.cookie_name].value)

    def _media_type(self, method: str, path: str, headers: dict[bytes, bytes]) -> str | None:
        if not path.startswith("/v1/"):
            return None
        has_body = headers.get(b"content-length", b"0") not in (b"0", b"") or (
            b"transfer-encoding" in headers
        )
        if not has_body:
            return None
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        media = content_type.split(";", 1)[0].strip().lower()
        allowed = MERGE_PATCH_TYPES if (method == "PATCH" and path == "/v1/me/data") else JSON_TYPES
        return None if media in allowed else "unsupported_media_type"

    async def _read_body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes | None:
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body:
                    return None
            except ValueError:
                pass
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _send_error(send: Send, code: str) -> None:
    body = error_bytes(code)
    await send(
        {
            "type": "http.response.start",
            "status": ERRORS[code][0],
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def vary_origin(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The response headers with ``Origin`` added to ``Vary`` as Starlette's CORS does it: every
    ``vary`` header merged into the first one's place, else one appended."""
    merged = list(headers)
    found = [i for i, (key, _) in enumerate(merged) if key == b"vary"]
    if not found:
        merged.append((b"vary", b"Origin"))
        return merged
    value = b", ".join([*(merged[i][1] for i in found), b"Origin"])
    for i in reversed(found[1:]):
        del merged[i]
    merged[found[0]] = (b"vary", value)
    return merged


class CORS(CORSMiddleware):
    """Starlette's ``CORSMiddleware``. A request without ``Origin`` gets only ``Vary: Origin``
    from it; Starlette would build a ``Headers`` of the request and a ``MutableHeaders`` of the
    response to find that out, on every request (about 4 % of ``POST /v1/anonymous``'s CPU).
    Requests with an ``Origin`` (CORS requests, preflights) go through Starlette's code."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, _ in scope["headers"]:
            if key == b"origin":
                await super().__call__(scope, receive, send)
                return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = vary_origin(message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, send_with_vary)
