"""Values PostgreSQL refuses to store (a NUL in text) are the client's problem, never a 5xx.

Schemathesis found these; each is kept here as a plain regression test.
"""

from __future__ import annotations

from tests.conftest import AppFactory

ADMIN_KEY = "hostile-input-admin-key-0123456789"


async def test_login_with_nul_in_email_is_invalid_credentials(app_with: AppFactory) -> None:
    _, c = await app_with()
    r = await c.post("/v1/login", json={"email": "a\u0000@example.com", "password": "x" * 12})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_credentials"


async def test_password_reset_with_nul_in_email_is_accepted_like_any_address(
    app_with: AppFactory,
) -> None:
    _, c = await app_with()
    nul = await c.post("/v1/password-reset", json={"email": "\u0000@example.com"})
    plain = await c.post("/v1/password-reset", json={"email": "nobody@example.com"})
    assert nul.status_code == plain.status_code == 202
    assert nul.json() == plain.json()


async def test_database_refusing_a_value_is_a_422_not_a_500(app_with: AppFactory) -> None:
    _, c = await app_with(admin_api_key=ADMIN_KEY)
    r = await c.get(
        "/v1/admin/users",
        params={"email": "a\u0000b"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"
