"""Helpers for the console tests: signing in and reading a form's CSRF token."""

from __future__ import annotations

import re

import httpx

from tests.lifecycle_support import ADMIN_KEY

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_in(page: httpx.Response, action: str) -> str:
    """The CSRF token of the form posting to ``action`` on ``page``."""
    form = re.search(rf'<form[^>]*action="{re.escape(action)}".*?</form>', page.text, re.S)
    assert form is not None, (action, page.text)
    token = CSRF_FIELD.search(form.group(0))
    assert token is not None, form.group(0)
    return token.group(1)


async def sign_in(browser: httpx.AsyncClient, key: str = ADMIN_KEY) -> httpx.Response:
    form = await browser.get("/admin/signin")
    assert form.status_code == 200
    return await browser.post(
        "/admin/signin", data={"csrf": csrf_in(form, "/admin/signin"), "key": key}
    )
