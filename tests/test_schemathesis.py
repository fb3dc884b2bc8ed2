"""Schemathesis against anonid's own ``/openapi.json``, in-process over ASGI.

Every operation is fuzzed (positive and negative cases, at least ``EXAMPLES`` generated cases each)
twice: without any credentials, and with a fresh valid session (a bearer token of an anonymous
user, of a registered user where the operation needs one, or the admin key for ``/v1/admin/*``).
Each response must not be a 5xx, must use a documented status code and content type, and must match
the documented schema. Where this fails, the spec or the code is wrong, never the check.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

import asyncpg
import jwt
import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.modes import GenerationMode
from schemathesis.python.asgi import get_client

from app.credentials.password_hashing import hash_password, normalise
from app.main import create_app
from app.platform.ids import new_id
from tests.conftest import make_settings
from tests.tokens import claims_for

EXAMPLES = 100
ADMIN_KEY = "schemathesis-admin-key-0123456789"
PASSWORD = "fuzzing tangerine lighthouse"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _settings(database_url: str) -> Any:
    # Limits high enough that the fuzzer exercises the handlers, not only the limiter. Challenges
    # on, so GET /v1/challenge answers and X-Anonid-Challenge is fuzzed too.
    return make_settings(
        database_url,
        admin_api_key=ADMIN_KEY,
        anonymous_challenge="altcha",
        anonymous_rate_limit="1000000/minute",
        login_rate_limit="1000000/minute",
    )


class _AppOnTestDatabase:
    """The ASGI app under test, bound to the per-run database once the fixture knows it.

    Schemathesis parametrizes at import time, before any fixture runs, so the schema is built from
    the same ``create_app`` code and the requests go through this stand-in to the real app.
    """

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "the fuzzed_app fixture binds the app first"
        await self.app(scope, receive, send)


TARGET = _AppOnTestDatabase()
OPENAPI = create_app(_settings("postgresql://unused/unused")).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)
schema.app = TARGET


@pytest.fixture(scope="module")
def fuzzed_app(database_url: str) -> Any:
    TARGET.app = create_app(_settings(database_url), database_url=database_url)
    return TARGET


@pytest.fixture(autouse=True)
def _bound(fuzzed_app: Any) -> None:
    """Every test here runs against the app on the test database."""


def test_fuzzed_document_is_the_served_one(fuzzed_app: Any) -> None:
    with get_client(fuzzed_app) as client:
        served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == OPENAPI
    # Every operation of CONTRACT §5 that has landed is in the document the fuzzer walks.
    assert {"/v1/anonymous", "/v1/me", "/v1/me/data", "/healthz"} <= set(OPENAPI["paths"])
    # The registered-only operations get a registered session in the session test.
    assert {("POST", "/v1/me/password"), ("POST", "/v1/logout-all")} <= REGISTERED_ONLY


class FreshSessions:
    """Valid sessions of accounts nobody else uses, made in batches: one per fuzzed case, so a
    fuzzed logout-all or DELETE /v1/me never ends the next case's session.

    Accounts are inserted in one statement per batch and their tokens are signed with the current
    signing key, exactly as the service signs them (``tests.tokens``); the first token is also
    checked against the API.
    """

    BATCH = 400

    def __init__(self, database_url: str, password_hash: str) -> None:
        self.database_url = database_url
        self.password_hash = password_hash
        self.ready: dict[bool, list[str]] = {True: [], False: []}

    def take(self, *, registered: bool = False) -> str:
        if not self.ready[registered]:
            self.ready[registered] = asyncio.run(self._make(registered))
        return self.ready[registered].pop()

    async def _make(self, registered: bool) -> list[str]:
        conn = await asyncpg.connect(self.database_url)
        try:
            key = await conn.fetchrow(
                "SELECT kid, private_pem FROM signing_keys WHERE retired_at IS NULL"
                " ORDER BY created_at DESC LIMIT 1"
            )
            ids = [new_id() for _ in range(self.BATCH)]
            if registered:
                await conn.execute(
                    "INSERT INTO users (id, email, is_anonymous, password_hash, converted_at)"
                    " SELECT u, 'fuzz-' || u::text || '@example.com', false, $2, now()"
                    " FROM unnest($1::uuid[]) AS u",
                    ids,
                    self.password_hash,
                )
            else:
                await conn.execute(
                    "INSERT INTO users (id, username, is_anonymous)"
                    " SELECT u, 'fuzz-' || u::text, true FROM unnest($1::uuid[]) AS u",
                    ids,
                )
            # One live session per account: its id is the token's sid (the users' ids serve,
            # being fresh UUIDv7s nobody else uses as a session id).
            await conn.execute(
                "INSERT INTO sessions (id, user_id, family_hash, live_hashes)"
                " SELECT u, u, sha256(u::text::bytea), ARRAY[sha256(('r' || u::text)::bytea)]"
                " FROM unnest($1::uuid[]) AS u",
                ids,
            )
        finally:
            await conn.close()
        private = serialization.load_pem_private_key(key["private_pem"].encode(), password=None)
        return [
            jwt.encode(
                claims_for(str(i), anon=not registered, sid=str(i)),
                private,  # type: ignore[arg-type]
                algorithm="ES256",
                headers={"kid": key["kid"], "typ": "JWT"},
            )
            for i in ids
        ]


@pytest.fixture(scope="module")
def sessions(database_url: str, password_hash: str) -> FreshSessions:
    return FreshSessions(database_url, password_hash)


def test_fresh_sessions_are_accepted_by_the_service(
    fuzzed_app: Any, sessions: FreshSessions
) -> None:
    with get_client(fuzzed_app) as client:
        for registered in (False, True):
            token = sessions.take(registered=registered)
            me = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200, me.text
            assert me.json()["is_anonymous"] is not registered


def _documents_code(operation: dict[str, Any], code: str) -> bool:
    for response in operation.get("responses", {}).values():
        for media in response.get("content", {}).values():
            error = media.get("schema", {}).get("properties", {}).get("error", {})
            if code in error.get("enum", []):
                return True
    return False


# Operations only a registered account may use: they document `forbidden` for guests.
REGISTERED_ONLY = {
    (method.upper(), path)
    for path, item in OPENAPI["paths"].items()
    for method, operation in item.items()
    if _documents_code(operation, "forbidden")
}


@pytest.fixture(scope="module")
def password_hash() -> str:
    return asyncio.run(hash_password(normalise(PASSWORD)))


def _credentials(case: Any, sessions: FreshSessions) -> dict[str, str]:
    path: str = case.operation.path
    if path.startswith("/v1/admin/"):
        return {"Authorization": f"Bearer {ADMIN_KEY}"}
    registered = (case.method.upper(), path) in REGISTERED_ONLY
    return {"Authorization": f"Bearer {sessions.take(registered=registered)}"}


@schema.parametrize()
@FUZZ
def test_every_operation_conforms_without_credentials(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_every_operation_conforms_with_a_valid_session(case: Any, sessions: FreshSessions) -> None:
    headers = dict(case.headers or {})
    headers.update(_credentials(case, sessions))
    response = case.call_and_validate(headers=headers, checks=CHECKS)
    takes_input = case.operation.body or case.operation.path_parameters or case.operation.query
    as_documented = (
        case.method.upper() == case.operation.method.upper()
        and case.meta is not None
        and case.meta.generation.mode is GenerationMode.POSITIVE
    )
    if case.operation.path.startswith("/v1/") and as_documented and not takes_input:
        # Nothing to get wrong but the session, and the session is valid: it must succeed.
        assert 200 <= response.status_code < 300, (case.method, case.path, response.text)


# A forged credential: arbitrary printable text, or a real token with one character replaced, cut
# short, or with its header, claims or signature segment swapped for arbitrary base64url text.
PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
FORGERY = st.one_of(
    st.tuples(st.just("text"), st.text(PRINTABLE, min_size=1, max_size=300), st.just(0)),
    st.tuples(st.just("flip"), st.sampled_from("ABCxyz019-_.="), st.integers(0, 10_000)),
    st.tuples(st.just("cut"), st.just(""), st.integers(0, 10_000)),
    st.tuples(
        st.sampled_from(["segment0", "segment1", "segment2"]),
        st.text(st.sampled_from("ABCDEFabcdef0123456789-_"), max_size=200),
        st.just(0),
    ),
)


def _forge(valid: str, forgery: tuple[str, str, int]) -> str:
    kind, text, at = forgery
    if kind == "text":
        return text
    if kind == "flip":
        at %= len(valid)
        return valid[:at] + text + valid[at + 1 :]
    if kind == "cut":
        return valid[: at % len(valid)]
    parts = valid.split(".")
    parts[int(kind[-1])] = text
    return ".".join(parts)


# The operations that authenticate the caller: they document a 401.
GATED = {
    (method.upper(), path)
    for path, item in OPENAPI["paths"].items()
    for method, operation in item.items()
    if "401" in operation.get("responses", {})
}


gated = schema.include(func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in GATED)


@gated.parametrize()
@gated.given(forgery=FORGERY, as_cookie=st.booleans())
@FUZZ
def test_every_operation_conforms_with_forged_credentials(
    case: Any, forgery: tuple[str, str, int], as_cookie: bool, sessions: FreshSessions
) -> None:
    valid = sessions.take()
    token = _forge(valid, forgery)
    headers = dict(case.headers or {})
    if as_cookie:
        headers["Cookie"] = f"anonid_session={token}"
    else:
        headers["Authorization"] = f"Bearer {token}"
    response = case.call_and_validate(headers=headers, checks=CHECKS)
    if case.operation.path == "/v1/me" and case.method.upper() == "GET":
        # Only a token whose bytes are unchanged (a no-op edit, or a change in base64 padding bits
        # that decodes to the same signature) may still open the account.
        assert (response.status_code == 200) == _same_bytes(valid, token), (token, response.text)


def _same_bytes(a: str, b: str) -> bool:
    def decoded(token: str) -> list[bytes] | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            return [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in parts]
        except (ValueError, binascii.Error):
            return None

    return decoded(a) is not None and decoded(a) == decoded(b)
