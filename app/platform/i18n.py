"""Languages (CONTRACT §15): the message catalogs, choosing a language, and the request's language.

- ``LANGUAGES`` ship: English is the source language (its text is in the templates and code),
  German, French and Spanish are catalogs in ``app/locales/<lang>/LC_MESSAGES/messages.po``.
- Catalogs are compiled from the committed ``.po`` files in memory, once per process when it
  starts (``compile_catalogs``), so a fresh ``pip install -e .`` (or any install) needs no build step and no ``.mo`` file
  can be stale. Untranslated and fuzzy entries fall back to English.
- A page speaks ``?lang=`` when it names a language anonid speaks, else the best of
  ``Accept-Language``, else ``ANONID_DEFAULT_LOCALE``.
- An email speaks the language of the request that caused it: ``RequestLanguage`` remembers the
  request (its ASGI scope) for the code it runs, and ``request_language`` reads it there. Outside
  a request (the worker, the command line) it is the default.
"""

from __future__ import annotations

import gettext
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qsl

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from starlette.types import ASGIApp, Receive, Scope, Send

LANGUAGES = ("en", "de", "fr", "es")
# Each language named in itself, for the pages' language links.
NAMES = {"en": "English", "de": "Deutsch", "fr": "Français", "es": "Español"}
LOCALES = Path(__file__).resolve().parent.parent / "locales"
DOMAIN = "messages"

# Bounds on what a client may make the negotiation read.
MAX_HEADER = 1024
MAX_RANGES = 32


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The compiled catalog of ``lang`` (English: the identity); compiled once per process."""
    if lang not in LANGUAGES:
        raise ValueError(f"anonid does not speak {lang!r}")
    if lang == "en":
        return gettext.NullTranslations()
    with catalog_path(lang).open("rb") as po:
        catalog = read_po(po, locale=lang, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def compile_catalogs() -> None:
    """Compile every catalog now (at start), so a broken ``.po`` stops the service at once
    rather than the first email in that language."""
    for lang in LANGUAGES:
        translations(lang)


def catalog_path(lang: str) -> Path:
    return LOCALES / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def _language_of(tag: str) -> str | None:
    primary = tag.strip().split("-", 1)[0].split("_", 1)[0].lower()
    return primary if primary in LANGUAGES else None


def negotiate(accept_language: str | None, asked: str | None, default: str) -> str:
    """``asked`` (``?lang=``) if anonid speaks it, else the preferred language of
    ``Accept-Language`` that anonid speaks (by quality, then order), else ``default``."""
    if asked:
        chosen = _language_of(asked)
        if chosen is not None:
            return chosen
    if not accept_language:
        return default
    ranges: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language[:MAX_HEADER].split(",")[:MAX_RANGES]):
        tag, _, params = item.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranges.append((-quality, position, tag))
    for _, _, tag in sorted(ranges):
        if tag.strip() == "*":
            return default
        chosen = _language_of(tag)
        if chosen is not None:
            return chosen
    return default


def language_of_scope(scope: Scope, default: str) -> str:
    """The language of a request, from its ASGI scope (``?lang=``, then ``Accept-Language``)."""
    accept = None
    for key, value in scope.get("headers", ()):
        if key == b"accept-language":
            accept = value.decode("latin-1")
            break
    asked = None
    query = scope.get("query_string", b"")
    if b"lang=" in query:
        for name, value in parse_qsl(query.decode("latin-1")):
            if name == "lang":
                asked = value
                break
    return negotiate(accept, asked, default)


_request: ContextVar[Scope | None] = ContextVar("anonid_request_scope", default=None)


def request_language(default: str) -> str:
    """The language of the request being served (see ``RequestLanguage``), else ``default``."""
    scope = _request.get()
    return default if scope is None else language_of_scope(scope, default)


@contextmanager
def speaking(scope: Scope) -> Iterator[None]:
    """Code run inside speaks the language of the request of ``scope``."""
    token = _request.set(scope)
    try:
        yield
    finally:
        _request.reset(token)


class RequestLanguage:
    """Plain ASGI: remembers the request for ``request_language``. Nothing is parsed unless
    something asks (an email being queued), so it costs a request almost nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with speaking(scope):
            await self.app(scope, receive, send)


def gettext_for(lang: str) -> Callable[[str], str]:
    """``gettext`` of ``lang``'s catalog."""
    return translations(lang).gettext
