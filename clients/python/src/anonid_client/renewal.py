"""Server-side renewal: ``POST /v1/session/refresh`` forwarding the browser's refresh cookie.

anonid answers with both new cookies as ``Set-Cookie`` headers, which the backend passes on to the
browser; the new tokens are read from those headers. A refusal (``401``: the session ended, the
token was reused or is unknown) carries headers that clear both cookies: they are passed on too.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

import httpx

from anonid_client.errors import InvalidSession, Unavailable
from anonid_client.keys import USER_AGENT


@dataclass(frozen=True, slots=True)
class Renewal:
    """A renewed session: the new pair, the user, and the ``Set-Cookie`` headers to pass on."""

    access_token: str
    refresh_token: str
    expires_in: int
    user: dict[str, Any]
    set_cookies: list[str]


@dataclass(frozen=True, slots=True)
class RefreshCall:
    """One refresh request: where, and which cookie names anonid uses."""

    url: str
    cookie_name: str
    refresh_cookie_name: str
    timeout: float

    def request(self, refresh_token: str) -> tuple[str, dict[str, str]]:
        if not refresh_token or any(c in refresh_token for c in ";,\r\n "):
            raise InvalidSession("That is not a refresh token.")
        return self.url, {
            "Cookie": f"{self.refresh_cookie_name}={refresh_token}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }

    def outcome(self, response: httpx.Response) -> Renewal:
        """The renewal in anonid's answer; ``InvalidSession`` (with the clearing cookies) for a
        refusal, ``Unavailable`` for anything else."""
        set_cookies = response.headers.get_list("set-cookie")
        if response.status_code == 401:
            raise InvalidSession("anonid ended this session.", set_cookies=set_cookies)
        if response.status_code != 200:
            raise Unavailable(f"anonid answered the refresh with {response.status_code}.")
        values = cookie_values(set_cookies)
        access = values.get(self.cookie_name)
        refresh = values.get(self.refresh_cookie_name)
        try:
            body = response.json()
            user, expires_in = body["user"], int(body["expires_in"])
        except (ValueError, KeyError, TypeError):
            raise Unavailable("anonid's refresh answer was not a session.") from None
        if not access or not refresh or not isinstance(user, dict):
            raise Unavailable("anonid's refresh answer set no session cookies.")
        return Renewal(access, refresh, expires_in, user, set_cookies)


def cookie_values(set_cookies: list[str]) -> dict[str, str]:
    """Name to value of each ``Set-Cookie`` header (a clearing one gives an empty value)."""
    values: dict[str, str] = {}
    for header in set_cookies:
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(header)
        except CookieError:
            continue
        for name, morsel in cookie.items():
            values[name] = morsel.value
    return values


def renew_blocking(call: RefreshCall, refresh_token: str) -> Renewal:
    url, headers = call.request(refresh_token)
    try:
        with httpx.Client(timeout=call.timeout) as client:
            response = client.post(url, headers=headers)
    except httpx.HTTPError as exc:
        raise Unavailable(f"anonid could not be reached: {exc}") from exc
    return call.outcome(response)


async def renew_async(call: RefreshCall, refresh_token: str) -> Renewal:
    url, headers = call.request(refresh_token)
    try:
        async with httpx.AsyncClient(timeout=call.timeout) as client:
            response = await client.post(url, headers=headers)
    except httpx.HTTPError as exc:
        raise Unavailable(f"anonid could not be reached: {exc}") from exc
    return call.outcome(response)
