"""The request guard: plain ASGI (no BaseHTTPMiddleware) for CSRF, media types and body size.

It runs before routing so a refused request costs no database work, and it buffers request
bodies up to a hard limit so an oversized or endless body is answered with 413, never a 5xx.

CSRF (CONTRACT §5): an unsafe request that carries the session cookie, or whose success would set
one (``SESSION_STARTING``: a cross-site form must not swap a visitor's guest or sign them in to
another account, though it carries no ``SameSite=Lax`` cookie), is refused with
``403 csrf_rejected`` when its ``Origin`` (else ``Referer``) is present and not allowed, or when
``Sec-Fetch-Site`` says ``cross-site``. A provider's callback (``PROVIDER_CALLBACK``) is exempt:
providers post it cross-site as a form by design, and its single-use state protects it.
A request with neither header (a server, curl) passes, and
so does one authenticated by ``Authorization: Bearer``, which no other site can make a browser
send. The guard reads cookies and the bearer token through ``app.platform.request_auth``, as the endpoints
do, and paths as routing does (under ``root_path``), so it judges the request the endpoint will
serve. Hosted forms also need their own token (``app.api.pages.Csrf``).

``CORS`` is Starlette's CORS middleware with a cheaper path for requests that carry no
``Origin`` (no CORS request at all), which only get ``Vary: Origin``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_bytes
from app.errors import ERRORS
from app.platform.request_auth import bearer_token, request_cookies

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES = frozenset({"application/json"})
MERGE_PATCH_TYPES = frozenset({"application/json", "application/merge-patch+json"})
MAX_BODY_BYTES = 1024 * 1024

# Where a successful request sets session cookies whether or not it came with one: the guest,
# every sign-in and link redemption of the API, the refresh, the hosted forms and the admin
# console (whose every form acts with its own SameSite=Strict session). Exact paths, and prefixes
# for the families (every POST /v1/login…, every /account/ and /admin/ form); a path here that
# some method does not serve is refused cross-site all the same, which costs nothing. A new
# endpoint that starts a session belongs here (POST /v1/oauth/{provider}/token does, by its
# pattern); a provider's callback does not (providers post it cross-site by design; its one-time
# state protects it).
# POST /v1/session/refresh is here although it may come with no cookie at all: nothing legitimate
# calls it cross-site from a browser (a page of an allowed origin, an app or a backend forwarding
# the refresh cookie all pass), and a foreign page must not rotate, or with a stolen token plant,
# a visitor's session cookies.
SESSION_STARTING = frozenset(
    {
        "/v1/anonymous",
        "/v1/password-setup",
        "/v1/password-reset/confirm",
        "/v1/conversion/confirm",
        "/admin",
        "/v1/session/refresh",
    }
)
SESSION_STARTING_PREFIXES = ("/v1/login", "/account/", "/admin/")
SESSION_STARTING_PATTERN = re.compile(r"^/v1/oauth/[^/]+/token$")
# A provider's callback (response_mode=form_post) is posted from the provider's own site, as a
# form: neither the origin check nor the JSON media type can apply. Its single-use state, bound
# to the browser that started the flow (app.credentials.oauth_state), protects it instead.
PROVIDER_CALLBACK = re.compile(r"^/v1/oauth/[^/]+/callback$")


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
        self,
        app: ASGIApp,
        *,
        cookie_names: tuple[str, ...],
        allowed_origins: frozenset[str],
        data_max: int,
    ) -> None:
        self.app = app
        self.cookie_names = cookie_names
        self._cookie_bytes = tuple(name.encode() for name in cookie_names)
        self.allowed_origins = allowed_origins
        # Room for a merge patch that removes much of a document, but bounded.
        self.max_body = max(MAX_BODY_BYTES, 2 * data_max)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE:
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key, value)  # the first of repeated headers, as Starlette reads
        path = _route_path(scope)

        refusal = None
        if not PROVIDER_CALLBACK.match(path):
            refusal = self._csrf(scope, path, headers)
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

    def _csrf(self, scope: Scope, path: str, headers: dict[bytes, bytes]) -> str | None:
        authorization = headers.get(b"authorization")
        if authorization is not None and bearer_token(authorization.decode("latin-1")):
            return None  # the endpoint authenticates with the header, not with a cookie
        if not (starts_session(path) or self.carries_session(scope)):
            return None
        origin_header = headers.get(b"origin") or headers.get(b"referer")
        fetch_site = headers.get(b"sec-fetch-site", b"").lower()
        if origin_header is not None:
            origin = _origin_of(origin_header.decode("latin-1"))
            # Under "Referrer-Policy: no-referrer" (the hosted pages) a browser sends
            # "Origin: null" with the page's own form posts; Sec-Fetch-Site, which no page can
            # set, still says whether the post came from this very origin.
            own_page = origin_header == b"null" and fetch_site == b"same-origin"
            if origin not in self.allowed_origins and not own_page:
                return "csrf_rejected"
        if fetch_site == b"cross-site":
            return "csrf_rejected"
        return None

    def carries_session(self, scope: Scope) -> bool:
        """Whether the endpoint will see either session cookie (access or refresh: CONTRACT §4
        counts both): the cookies exactly as it reads them (``request_cookies``), parsed only
        when a ``Cookie`` header mentions one of the names."""
        raw_headers = scope["headers"]
        if not any(
            k == b"cookie" and any(name in v for name in self._cookie_bytes) for k, v in raw_headers
        ):
            return False
        cookies = request_cookies(raw_headers)
        return any(cookies.get(name) for name in self.cookie_names)

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


def starts_session(path: str) -> bool:
    """Whether a successful unsafe request to ``path`` sets a session cookie (``SESSION_STARTING``)."""
    return (
        path in SESSION_STARTING
        or path.startswith(SESSION_STARTING_PREFIXES)
        or SESSION_STARTING_PATTERN.match(path) is not None
    )


def _route_path(scope: Scope) -> str:
    """The path routing matches, without the ``root_path`` a server behind a prefix includes
    (as Starlette's ``get_route_path``), so the path rules hold under a prefix too."""
    path: str = scope["path"]
    root = scope.get("root_path")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


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
