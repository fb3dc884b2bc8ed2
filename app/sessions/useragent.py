"""A short summary of a ``User-Agent`` header, "Browser on System", for a user's session list.

The raw header is never stored: it is long, identifying, and says little a person recognises.
"""

from __future__ import annotations

import re

MAX_HEADER = 512
MAX_SUMMARY = 64

# Order matters: Edge and Opera also say "Chrome", Chrome also says "Safari", and so on.
_BROWSERS = (
    ("Edge", re.compile(r"\bEdg(?:e|A|iOS)?/")),
    ("Opera", re.compile(r"\b(?:OPR|Opera)/")),
    ("Samsung Internet", re.compile(r"\bSamsungBrowser/")),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/")),
    ("Chrome", re.compile(r"\b(?:Chrome|CriOS|HeadlessChrome|Chromium)/")),
    ("Safari", re.compile(r"\bVersion/[\d.]+.*\bSafari/")),
    ("curl", re.compile(r"^curl/")),
    ("Python", re.compile(r"^(?:python-httpx|python-requests|aiohttp|Python-urllib)/")),
    ("Node.js", re.compile(r"^(?:node|undici|axios|node-fetch)")),
)
_SYSTEMS = (
    ("iOS", re.compile(r"\b(?:iPhone|iPad|iPod)\b")),
    ("Android", re.compile(r"\bAndroid\b")),
    ("ChromeOS", re.compile(r"\bCrOS\b")),
    ("Windows", re.compile(r"\bWindows\b")),
    ("macOS", re.compile(r"\bMac OS X\b|\bMacintosh\b")),
    ("Linux", re.compile(r"\bLinux\b")),
)


def summarise(header: str | None) -> str | None:
    """ "Firefox on Linux", "Safari on iOS", "curl"…; ``None`` without a header, and the header's
    first word (cut short) when nothing is recognised."""
    if not header:
        return None
    text = header[:MAX_HEADER]
    browser = next((name for name, pattern in _BROWSERS if pattern.search(text)), None)
    system = next((name for name, pattern in _SYSTEMS if pattern.search(text)), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return browser or system
    first = text.split(" ", 1)[0].split("/", 1)[0]
    cleaned = "".join(c for c in first if c.isprintable())
    return cleaned[:MAX_SUMMARY] or None
