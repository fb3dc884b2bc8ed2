"""The console's sign-in: a short, stateless session cookie made when the admin key is given.

Guarantees (CONTRACT §17):
- the cookie is ``HttpOnly``, ``SameSite=Strict``, ``Path=/admin``, ``Secure`` per
  ``ANONID_COOKIE_SECURE`` (then also ``__Secure-`` prefixed), and lives ``IDLE`` after the last
  page view, never longer than ``LIFETIME`` after sign-in;
- its value is a random session id and its times, MACed with the server's ``console`` secret
  (``app.server_secrets``, shared by every process) over a hash of the admin key: rotating
  ``ANONID_ADMIN_API_KEY`` (or unsetting it) ends every console session at once;
- the admin key is compared in constant time and never stored in the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from app.services import Services

IDLE = 30 * 60
LIFETIME = 8 * 60 * 60
PATH = "/admin"


@dataclass(frozen=True)
class ConsoleSession:
    sid: str
    signed_in_at: int
    expires_at: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _key_digest(svc: Services) -> bytes | None:
    key = svc.settings.admin_api_key
    if key is None or not key.get_secret_value():
        return None
    return hashlib.sha256(key.get_secret_value().encode()).digest()


def _mac(svc: Services, body: str, key_digest: bytes) -> str:
    message = b"\0".join((b"anonid-console", body.encode(), key_digest))
    return _b64(hmac.new(svc.server_secrets["console"], message, hashlib.sha256).digest())


def admin_key_matches(svc: Services, given: str) -> bool:
    """Whether ``given`` is ``ANONID_ADMIN_API_KEY`` (constant time; never, when it is unset)."""
    key = svc.settings.admin_api_key
    if key is None or not key.get_secret_value():
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), key.get_secret_value().encode()
    )


def cookie_name(svc: Services) -> str:
    prefix = "__Secure-" if svc.settings.cookie_secure else ""
    return f"{prefix}{svc.cookies.name}_admin"


def start(svc: Services) -> ConsoleSession:
    now = int(time.time())
    return ConsoleSession(secrets.token_urlsafe(18), now, now + IDLE)


def renewed(session: ConsoleSession) -> ConsoleSession:
    """The same session, its idle time restarted (within its lifetime)."""
    expires = min(int(time.time()) + IDLE, session.signed_in_at + LIFETIME)
    return ConsoleSession(session.sid, session.signed_in_at, expires)


def read(svc: Services, value: str | None) -> ConsoleSession | None:
    """The session in a cookie value, if it is intact, current and made with today's admin key."""
    digest = _key_digest(svc)
    if digest is None or not value or len(value) > 200:
        return None
    body, _, mac = value.rpartition(".")
    if not hmac.compare_digest(_mac(svc, body, digest), mac):
        return None
    try:
        sid, signed_in, expires = body.split(".")
        session = ConsoleSession(sid, int(signed_in), int(expires))
    except ValueError:
        return None
    now = time.time()
    if session.expires_at <= now or session.signed_in_at + LIFETIME <= now:
        return None
    return session


def set_cookie(svc: Services, session: ConsoleSession) -> str:
    digest = _key_digest(svc)
    assert digest is not None, "a console session needs an admin key"
    body = f"{session.sid}.{session.signed_in_at}.{session.expires_at}"
    max_age = max(0, session.expires_at - int(time.time()))
    return f"{cookie_name(svc)}={body}.{_mac(svc, body, digest)}; Max-Age={max_age}{_attrs(svc)}"


def clear_cookie(svc: Services) -> str:
    return f'{cookie_name(svc)}=""; Max-Age=0{_attrs(svc)}'


def _attrs(svc: Services) -> str:
    secure = "; Secure" if svc.settings.cookie_secure else ""
    return f"; Path={PATH}; HttpOnly; SameSite=Strict{secure}"
