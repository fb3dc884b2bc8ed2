"""Where a provider sign-in may send the browser back (CONTRACT §13): a URL on
``ANONID_PUBLIC_URL`` or on an origin of ``ANONID_ALLOWED_ORIGINS``, nothing else.

An open redirect here would hand a fresh session's landing page to anyone, so the check is
strict and the URL that leaves is rebuilt from the parts that were checked (no second parser
reads the original): absolute http(s) URLs whose scheme, host and port equal an allowed origin
(default ports folded, host case folded), or a path on the public URL. Refused: anything with
user information, a backslash, whitespace or control characters, scheme-relative ``//host``,
other schemes, hosts that merely start or end like an allowed one.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

from app.errors import AnonidError
from app.settings import Settings

MAX_RETURN_TO = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")


def _origin(scheme: str, host: str, port: int | None) -> str:
    scheme, host = scheme.lower(), host.lower()
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _parse(url: str) -> tuple[str, str, str] | None:
    """(origin, path, query#fragment rest) of an absolute http(s) URL without tricks, else None."""
    if not url or len(url) > MAX_RETURN_TO or _FORBIDDEN.search(url) or not url.isascii():
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if "@" in parts.netloc or not url[len(parts.scheme) :].startswith("://"):
        return None
    rest = ("?" + parts.query if parts.query else "") + (
        "#" + parts.fragment if parts.fragment else ""
    )
    return _origin(parts.scheme, parts.hostname, port), parts.path or "/", rest


def allowed_origins(settings: Settings) -> frozenset[str]:
    origins = set()
    for origin in settings.csrf_origins:
        parsed = _parse(origin)
        if parsed is not None:
            origins.add(parsed[0])
    return frozenset(origins)


def check_return_to(raw: str | None, settings: Settings) -> str:
    """The URL to return to, rebuilt from its checked parts; the first allowed origin when none
    is given. Raises ``invalid_return_to``."""
    if raw is None or raw == "":
        return settings.origins[0] + "/"
    if raw.startswith("/") and not raw.startswith("//"):
        # A path on the public URL.
        raw = settings.public_url + raw
    parsed = _parse(raw)
    if parsed is None or parsed[0] not in allowed_origins(settings):
        raise AnonidError("invalid_return_to")
    origin, path, rest = parsed
    return origin + path + rest


def with_error(url: str, code: str) -> str:
    """``url`` with ``error=<code>`` in its query (replacing any), its fragment kept."""
    base, hash_mark, fragment = url.partition("#")
    path, _, query = base.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "error"]
    pairs.append(("error", code))
    return f"{path}?{urlencode(pairs)}{hash_mark}{fragment}"
