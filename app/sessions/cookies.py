"""The two session cookies of CONTRACT §4, as ``Set-Cookie`` values built from the settings.

Both are ``HttpOnly``, ``SameSite=Lax``, ``Path=/``, ``Secure`` per ``ANONID_COOKIE_SECURE`` and
``Domain`` per ``ANONID_COOKIE_DOMAIN``, with ``Max-Age`` the session's remaining lifetime (not the
access token's: a browser keeps sending an expired access cookie, and anonid renews it from the
refresh cookie).
"""

from __future__ import annotations

from app.settings import Settings


class CookieJar:
    def __init__(self, settings: Settings) -> None:
        self.name = settings.cookie_name
        self.refresh_name = settings.refresh_cookie_name
        attrs = "; Path=/; HttpOnly; SameSite=Lax"
        if settings.cookie_secure:
            attrs += "; Secure"
        if settings.cookie_domain:
            attrs += f"; Domain={settings.cookie_domain}"
        self._attrs = attrs
        self.names = (self.name, self.refresh_name)
        # Clearing sets both, so a browser never keeps half a session.
        self.clear = [f'{name}=""; Max-Age=0{attrs}' for name in self.names]

    def set(self, access_token: str, refresh_token: str, max_age: int) -> list[str]:
        return [
            f"{self.name}={access_token}; Max-Age={max_age}{self._attrs}",
            f"{self.refresh_name}={refresh_token}; Max-Age={max_age}{self._attrs}",
        ]

    def set_access(self, access_token: str, max_age: int) -> str:
        return f"{self.name}={access_token}; Max-Age={max_age}{self._attrs}"

    def carried(self, cookies: dict[str, str]) -> bool:
        """Whether a request carried either session cookie (CONTRACT §4: either counts)."""
        return bool(cookies.get(self.name) or cookies.get(self.refresh_name))
