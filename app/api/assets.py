"""Static files of the hosted pages: the vendored ALTCHA widget (``app/static/altcha``), the
script that uses it (``app/static/anonid-guest.js``) and the passkey helper
(``app/static/passkeys.js``, which apps may load too), served from anonid itself so the pages'
Content-Security-Policy stays ``'self'``. Only the files listed here are served."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import Response

from app.errors import AnonidError

router = APIRouter(prefix="/account/assets", include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"
FILES = {
    "anonid-guest.js": "text/javascript",
    "passkeys.js": "text/javascript",
    "altcha/altcha.min.js": "text/javascript",
    "altcha/sha.js": "text/javascript",
    "altcha/altcha.css": "text/css",
}
_CACHE: dict[str, bytes] = {}


@router.get("/{name:path}")
async def asset(name: str) -> Response:
    media_type = FILES.get(name)
    if media_type is None:
        raise AnonidError("not_found")
    body = _CACHE.get(name)
    if body is None:
        body = _CACHE[name] = (STATIC / name).read_bytes()
    return Response(
        body,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
