"""How a request carries its session: the one reading of ``Cookie`` and ``Authorization``.

The request guard decides whether a request is subject to the CSRF rules from the same headers
the endpoints authenticate it with, so both read them here and cannot disagree. Cookies are read
exactly as Starlette's ``Request.cookies`` reads them (every ``Cookie`` header, Starlette's
parser): Python's ``SimpleCookie`` stops at the first cookie it cannot parse
(``prefs={"theme":"dark"}``) where Starlette goes on, and reading only the first ``Cookie`` header
misses cookies that HTTP/2 sends in headers of their own; either way the guard once saw no session
cookie where the endpoint authenticated with one.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import cookie_parser


def request_cookies(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Every cookie of a request, as ``Request.cookies`` has it: each ``Cookie`` header in turn
    through Starlette's parser, a later value of a name replacing an earlier one."""
    cookies: dict[str, str] = {}
    for key, value in raw_headers:
        if key == b"cookie":
            cookies.update(cookie_parser(value.decode("latin-1")))
    return cookies


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; ``None`` for any other value
    (another scheme, such as the Basic credentials a browser attaches by itself, or no token)."""
    scheme, _, value = authorization.partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
