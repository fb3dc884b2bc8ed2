"""Provider sign-in flows (CONTRACT §13) between the routes and the rules: start an authorization
request, finish it at the callback, take a native app's ID token, and issue the session.

Every path that signs someone in or registers them ends in ``sign_in``: the one place where this
flow answers with a session; ``sessions.start`` begins it in the transaction that settles the
identity, as every way of signing in does. No provider is waited on while a database connection is held: the state is
redeemed in one statement, the code exchanged and the ID token verified with no connection, and
the outcome settled in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.api.credential_flows import limit_credentials
from app.api.deps import Session, client_address, lenient_session, user_agent
from app.api.responses import NO_STORE, session_body, session_response
from app.api.return_to import check_return_to, with_error
from app.credentials.identities import (
    IDENTITY_UNIQUE,
    CreationNeedsApproval,
    Outcome,
    ProviderIdentity,
    Settled,
    current_starter,
    settle,
)
from app.credentials.oauth_state import FLOW_TTL, new_browser_secret, redeem_flow, start_flow
from app.credentials.oidc_client import (
    InvalidIdToken,
    OidcProviders,
    ProviderClient,
    ProviderUnavailable,
    native_nonce,
)
from app.errors import AnonidError, FlowError
from app.hooks.calls import before_user_created
from app.lifecycle.addresses import EMAIL_UNIQUE_INDEX
from app.lifecycle.users import get_user
from app.services import Services
from app.sessions.store import Pair, start, with_app_claims

log = logging.getLogger("anonid.oidc")

REDIRECT_HEADERS = {**NO_STORE, "Referrer-Policy": "no-referrer"}
_BROWSER_SECRET_CHARS = 43  # secrets.token_urlsafe(32)


def sign_in(
    request: Request,
    svc: Services,
    pair: Pair,
    *,
    merged_from: UUID | None = None,
    redirect_to: str | None = None,
) -> Response:
    """THE one place a provider sign-in answers with the session ``sessions.start`` began (in
    the transaction that settled the identity): the ``S`` response (native apps; with
    ``merged_from`` as for password login), or a ``303`` to ``redirect_to`` carrying both
    session cookies (the browser flow)."""
    if redirect_to is None:
        extra = {"merged_from": str(merged_from)} if merged_from is not None else {}
        return session_response(request, svc, pair, 200, **extra)
    _, cookies = session_body(svc, pair, bearer=False)
    response = redirect(redirect_to)
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


async def _start_session(
    conn: AsyncConnection, svc: Services, settled: Settled, request: Request
) -> Pair:
    """The session of a settled sign-in, in its transaction. A guest converted in place has its
    session version bumped: its other sessions end, as for every conversion (CONTRACT §4); a
    merged guest's sessions went with the guest."""
    return await start(
        conn,
        svc,
        settled.account,
        user_agent=user_agent(request),
        end_others=settled.outcome is Outcome.PROMOTE,
    )


def redirect(url: str, status: int = 303) -> Response:
    return RedirectResponse(url, status_code=status, headers=REDIRECT_HEADERS)


def providers(svc: Services) -> OidcProviders:
    return svc.extras["oidc"]  # type: ignore[no-any-return]


def provider_client(svc: Services, name: str) -> ProviderClient:
    client = providers(svc).get(name)
    if client is None:
        raise AnonidError("not_found", "No provider of that name is configured.")
    return client


# The browser's flow cookie: binds each authorization request to the browser that started it.
# The callback may come as a cross-site form post (response_mode=form_post), which carries only
# SameSite=None cookies; those need Secure, so plain-http local use keeps Lax (query mode works).


def flow_cookie_name(svc: Services) -> str:
    return f"{svc.cookies.name}_oauth"


def _flow_cookie(svc: Services, value: str) -> str:
    secure = svc.settings.cookie_secure
    same_site = "SameSite=None; Secure" if secure else "SameSite=Lax"
    max_age = int(FLOW_TTL.total_seconds())
    return f"{flow_cookie_name(svc)}={value}; Max-Age={max_age}; Path=/v1/oauth/; HttpOnly; {same_site}"


def _browser_secret(request: Request, svc: Services) -> str:
    current = request.cookies.get(flow_cookie_name(svc), "")
    well_formed = len(current) == _BROWSER_SECRET_CHARS and all(
        c.isalnum() or c in "-_" for c in current
    )
    return current if well_formed else new_browser_secret()


async def _session_starter(svc: Services, session: Session | None) -> tuple[UUID, int] | None:
    """The session's account if it still exists at that session version (a stale cookie starts
    the flow as nobody, as it would start a fresh guest)."""
    if session is None:
        return None
    async with svc.single_statement() as conn:
        user = await get_user(conn, session.claims.sub)
    if user is None or user.session_version != session.claims.sv:
        return None
    return session.claims.sub, session.claims.sv


async def start_authorization(
    request: Request, svc: Services, name: str, raw_return_to: str | None
) -> Response:
    """``302`` to the provider, the request remembered with who started it and ``return_to``."""
    client = provider_client(svc, name)
    return_to = check_return_to(raw_return_to, svc.settings)
    await limit_credentials(request, svc, None)
    starter = await _session_starter(svc, await lenient_session(request))
    try:
        await client.metadata()  # before the row: an unreachable provider leaves nothing behind
    except ProviderUnavailable as exc:
        log.warning("provider %s unavailable at authorize: %s", name, exc)
        return redirect(with_error(return_to, "provider_error"))
    browser = _browser_secret(request, svc)
    async with svc.single_statement() as conn:
        started = await start_flow(
            conn,
            provider=name,
            browser_secret=browser,
            user_id=starter[0] if starter else None,
            session_version=starter[1] if starter else None,
            return_to=return_to,
        )
    url = await client.authorization_url(
        svc.settings.oauth_redirect_uri(name), started.state, started.nonce, started.code_verifier
    )
    response = redirect(url, 302)
    response.headers.append("set-cookie", _flow_cookie(svc, browser))
    return response


async def settle_identity(
    request: Request,
    svc: Services,
    client: ProviderClient,
    claims: dict[str, Any],
    starter_ref: tuple[UUID, int] | None,
    *,
    stale_starter_fails: bool,
) -> tuple[Settled, Pair | None]:
    """The outcome of §13 for a verified identity and, when it signs someone in, their new
    session, in one transaction. A new account is first put to the ``before_user_created`` hook,
    with no connection held (``hook_denied``); the ``custom_claims`` hook is asked once the
    transaction has ended."""
    identity = ProviderIdentity.from_claims(client.config.name, claims)
    approved = not svc.hooks.before_user_created
    while True:
        try:
            settled, pair = await _settle_once(
                request, svc, client, identity, starter_ref, stale_starter_fails, approved
            )
            break
        except CreationNeedsApproval:
            ip = client_address(request, svc.settings)
            ua = request.headers.get("user-agent")
            await before_user_created(svc.hooks, "registered", ip, ua)
            approved = True  # settled again: the outcome may have changed meanwhile
    if pair is not None:
        pair = await with_app_claims(svc, pair)
    return settled, pair


async def _settle_once(
    request: Request,
    svc: Services,
    client: ProviderClient,
    identity: ProviderIdentity,
    starter_ref: tuple[UUID, int] | None,
    stale_starter_fails: bool,
    creation_approved: bool,
) -> tuple[Settled, Pair | None]:
    """One transaction settling the identity; a first sign-in racing another with the same
    identity (or address) loses the insert and is settled once more."""
    for attempt in range(2):
        try:
            async with svc.engine.begin() as conn:
                starter = None
                if starter_ref is not None:
                    starter = await current_starter(conn, *starter_ref)
                    if starter is None and stale_starter_fails:
                        raise FlowError("invalid_state", "the account that started it moved on")
                settled = await settle(
                    conn,
                    svc.settings,
                    identity,
                    starter,
                    trust_email=client.config.trust_email,
                    hooks=svc.hooks,
                    creation_approved=creation_approved,
                )
                if not settled.starts_session:
                    return settled, None
                return settled, await _start_session(conn, svc, settled, request)
        except sqlalchemy.exc.IntegrityError as exc:
            # A concurrent transaction took the identity or the address: settled again, the
            # facts it committed decide (a sign-in, an account without that address).
            text = str(exc.orig)
            if attempt == 0 and (IDENTITY_UNIQUE in text or EMAIL_UNIQUE_INDEX in text):
                continue
            if EMAIL_UNIQUE_INDEX in text:
                raise FlowError("email_taken") from None
            raise
    raise FlowError("provider_error", "the identity kept changing")  # pragma: no cover


async def finish_callback(
    request: Request, svc: Services, name: str, params: Mapping[str, str]
) -> Response:
    """The provider's answer: a ``303`` to ``return_to`` signed in, or with ``?error=<code>``
    and nothing changed."""
    client = provider_client(svc, name)
    login_url = f"{svc.settings.public_url}/account/login"
    browser = request.cookies.get(flow_cookie_name(svc), "")
    async with svc.single_statement() as conn:
        flow = await redeem_flow(conn, params.get("state", ""), browser)
    if flow is None or flow.provider != name or not flow.live:
        return redirect(with_error(login_url, "invalid_state"))
    try:
        error = params.get("error")
        if error is not None:
            raise FlowError(
                "access_denied" if error == "access_denied" else "provider_error", error
            )
        # RFC 9207: an answer naming another issuer is a mix-up, whatever it carries.
        issuer = params.get("iss")
        if issuer is not None and issuer != client.config.issuer:
            raise FlowError("provider_error", f"iss {issuer!r} in the authorization response")
        code = params.get("code")
        if not code:
            raise FlowError("provider_error", "no code in the authorization response")
        claims = await client.code_to_claims(
            code, svc.settings.oauth_redirect_uri(name), flow.code_verifier, flow.nonce
        )
        starter_ref = None
        if flow.user_id is not None and flow.session_version is not None:
            starter_ref = (flow.user_id, flow.session_version)
        settled, pair = await settle_identity(
            request, svc, client, claims, starter_ref, stale_starter_fails=True
        )
    except FlowError as exc:
        log.info("provider %s sign-in refused: %s", name, exc)
        return redirect(with_error(flow.return_to, exc.code))
    except AnonidError as exc:
        if exc.code != "hook_denied":
            raise
        # The application refused the new account (CONTRACT §16): the browser flow's way of
        # saying so is §13's access_denied.
        log.info("provider %s sign-in refused by before_user_created: %s", name, exc.message)
        return redirect(with_error(flow.return_to, "access_denied"))
    if pair is None:
        return redirect(flow.return_to)
    return sign_in(request, svc, pair, merged_from=settled.merged_from, redirect_to=flow.return_to)


async def native_sign_in(
    request: Request,
    svc: Services,
    name: str,
    session: Session | None,
    id_token: str,
    nonce: str | None,
) -> Response:
    """``POST /v1/oauth/{provider}/token``: the same outcomes for an ID token the app obtained;
    only a guest session counts as the starter (as for password login)."""
    client = provider_client(svc, name)
    await limit_credentials(request, svc, None)
    try:
        claims = await client.verify_id_token(id_token, native_nonce(nonce))
    except (InvalidIdToken, ProviderUnavailable) as exc:
        log.info("provider %s native token refused: %s", name, exc)
        raise AnonidError("invalid_credentials", "The ID token could not be verified.") from None
    starter_ref = None
    if session is not None and session.claims.anon:
        starter_ref = (session.claims.sub, session.claims.sv)
    try:
        settled, pair = await settle_identity(
            request, svc, client, claims, starter_ref, stale_starter_fails=False
        )
    except FlowError as exc:
        if exc.code == "email_taken":
            raise AnonidError("email_taken") from None
        raise AnonidError("invalid_credentials") from None
    assert pair is not None  # without a signed-in starter, every outcome starts a session
    return sign_in(request, svc, pair, merged_from=settled.merged_from)
