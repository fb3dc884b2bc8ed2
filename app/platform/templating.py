"""Every email, hosted page and console page is rendered here (CONTRACT §15).

- Templates are found by their path relative to ``app/templates`` (``pages/login.html``,
  ``email/conversion_setup.txt``, ``admin/overview.html``); a file of the same relative path in
  ``ANONID_TEMPLATES_DIR`` replaces the shipped one, and a replacement may extend or include
  shipped templates by the same names.
- Each language has its own environment with Jinja2's i18n extension bound to its catalog
  (``app.platform.i18n``), so ``{% trans %}``, ``_()`` and ``ngettext()`` speak that language.
- Every template sees ``brand`` (``ANONID_BRAND_NAME``, ``_LOGO_URL``, ``_COLOR``, and the text
  colour that reads on it) and ``lang``. HTML is autoescaped; undefined names are errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from app.platform.i18n import translations
from app.settings import Settings

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
DEFAULT_COLOR = "#2754c5"


def _luminance(color: str) -> float:
    """WCAG relative luminance of a ``#rgb`` or ``#rrggbb`` colour."""
    hex_ = color.lstrip("#")
    if len(hex_) == 3:
        hex_ = "".join(c * 2 for c in hex_)
    channels = [int(hex_[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours (1 to 21)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@dataclass(frozen=True)
class Brand:
    name: str
    logo_url: str | None
    color: str
    # Text on ``color`` (buttons, the header bar): white or near-black, whichever reads better.
    on_color: str

    @property
    def logo_origin(self) -> str | None:
        """The logo's origin, for a Content-Security-Policy ``img-src``."""
        if self.logo_url is None:
            return None
        parts = urlsplit(self.logo_url)
        return f"{parts.scheme}://{parts.netloc}"


def brand_of(settings: Settings) -> Brand:
    color = settings.brand_color or DEFAULT_COLOR
    on_color = "#ffffff" if contrast(color, "#ffffff") >= contrast(color, "#111111") else "#111111"
    return Brand(settings.brand_name, settings.brand_logo_url, color, on_color)


@cache
def environment(templates_dir: Path | None, lang: str) -> Environment:
    """The environment of one language (one per templates folder and language, per process)."""
    loaders = [FileSystemLoader(SHIPPED)]
    if templates_dir is not None:
        loaders.insert(0, FileSystemLoader(templates_dir))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(["html", "svg"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    return env


def render(settings: Settings, name: str, lang: str, context: dict[str, Any]) -> str:
    """Template ``name`` in ``lang`` with ``brand``, ``lang`` and ``context``."""
    template = environment(settings.templates_dir, lang).get_template(name)
    return template.render({"brand": brand_of(settings), "lang": lang, **context})
