"""``create_app(settings)``: wiring only."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from app import __version__
from app.admin import router as console_router
from app.api import (
    account,
    admin,
    assets,
    challenge,
    devmail,
    email_pages,
    errors,
    oauth,
    ops,
    pages,
    passkeys,
    passwordless,
    public,
    security_page,
)
from app.api import metrics as metrics_api
from app.api import privacy as privacy_api
from app.api import sessions as sessions_api
from app.api.hot import HotPaths
from app.credentials.oidc_client import OidcProviders
from app.hooks.client import Hooks
from app.lifecycle.anonymous import GuestInserts
from app.outbox.smtputf8 import Smtputf8Support
from app.platform.catcher import caught_mail_dir, effective_smtp_url
from app.platform.db import RESOLVED_URL_ENV, open_databases, resolve_database_url
from app.platform.i18n import RequestLanguage, compile_catalogs
from app.platform.logs import configure_logging
from app.platform.middleware import CORS, RequestGuard
from app.platform.observability import RequestObserver
from app.platform.pgpool import HotPool
from app.platform.ratelimit import RateLimiter
from app.server_secrets import load_server_secrets
from app.services import Services
from app.sessions.access import AccessTokens
from app.sessions.cookies import CookieJar
from app.sessions.keys import KeyRing, ensure_signing_key
from app.sessions.refresh import Rotations
from app.settings import Settings, load_settings

log = logging.getLogger("anonid")


async def _refresh_keys(keys: KeyRing) -> None:
    while True:
        await asyncio.sleep(keys.settings.key_cache_seconds)
        try:
            await keys.load()
        except Exception as exc:  # the database may be down; keep the cached keys
            log.warning("could not refresh signing keys: %s", type(exc).__name__)


def _fastapi_telemetry() -> TelemetryConfig | None:
    """FastAPI's OpenTelemetry instrumentation where OpenTelemetry is set up (``OTEL_*`` or
    ``FASTAPI_OTEL_AUTO_CONFIGURE`` in the environment, as ``opentelemetry-instrument`` sets).
    Elsewhere it would only ask, on every request, whether a provider has appeared: about 4 %
    of the CPU of ``POST /v1/anonymous`` (``bench/NOTES.md``)."""
    if any(k.startswith("OTEL_") or k == "FASTAPI_OTEL_AUTO_CONFIGURE" for k in os.environ):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings | None = None,
    database_url: str | None = None,
    *,
    freeze_heap: bool = False,
) -> FastAPI:
    """The service; ``freeze_heap`` (serving processes only) exempts what start-up built from
    the cyclic GC once the lifespan has started (see ``freeze_startup_heap``)."""
    settings = settings or load_settings()
    cookies = CookieJar(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        compile_catalogs()
        url = database_url or resolve_database_url(settings)
        # One pool for every kind of request, none of its connections overflow (see
        # create_engine): requests hold theirs for one transaction, the hot paths for one statement.
        databases = await open_databases(settings, url)
        engine = databases.engine
        try:
            async with engine.begin() as conn:
                await ensure_signing_key(conn)
                server_secrets = await load_server_secrets(conn)
        except BaseException:
            await databases.dispose()
            raise
        pool = HotPool(engine)
        keys = KeyRing(settings, engine)
        await keys.load()
        services = Services(
            settings=settings,
            engine=engine,
            pool=pool,
            topology=databases.topology,
            direct=databases.direct,
            keys=keys,
            access=AccessTokens(keys),
            cookies=cookies,
            server_secrets=server_secrets,
            hooks=Hooks(settings),
        )
        app.state.services = services
        services.extras["limiter"] = RateLimiter(settings)
        services.extras["rotations"] = Rotations(pool)
        services.extras["guests"] = GuestInserts(
            pool, settings.webhook_url_list, paid=settings.anonymous_challenge == "altcha"
        )
        # Asked now, in the background: POST /v1/me/conversion waits for the answer if it must.
        smtputf8 = Smtputf8Support(effective_smtp_url(settings))
        smtputf8.start()
        services.extras["smtputf8"] = smtputf8
        # Discovery and JWKS are fetched on first use, never at start: a provider that is down
        # must not keep the service from starting.
        oidc = OidcProviders(settings)
        services.extras["oidc"] = oidc
        tasks = [asyncio.create_task(_refresh_keys(keys), name="anonid-keys")]
        if settings.run_worker:
            from app.outbox.worker import OutboxWorker

            worker = OutboxWorker(
                engine,
                settings,
                smtp_url=effective_smtp_url(settings),
                listen_url=databases.topology.direct_url,
                lock_engine=databases.direct,
            )
            tasks.append(asyncio.create_task(worker.run(), name="anonid-worker"))
        if freeze_heap:
            # After the pools, keys, worker and limiter exist: they live as long as the process.
            freeze_startup_heap()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.extras["limiter"].close()
            await smtputf8.close()
            await oidc.close()
            await services.hooks.close()
            await pool.close()
            await databases.dispose()

    app = FastAPI(
        telemetry=_fastapi_telemetry(),
        title="anonid",
        version=__version__,
        summary="Anonymous accounts that become registered ones, on your own PostgreSQL.",
        lifespan=lifespan,
    )
    errors.install(app, cookies)
    app.include_router(public.router)
    app.include_router(challenge.router)
    app.include_router(account.router)
    app.include_router(passwordless.router)
    app.include_router(oauth.router)
    app.include_router(passkeys.router)
    app.include_router(sessions_api.router)
    app.include_router(pages.router)
    app.include_router(email_pages.router)
    app.include_router(security_page.router)
    app.include_router(assets.router)
    app.include_router(ops.router)
    app.include_router(privacy_api.router)
    app.include_router(admin.router)
    app.include_router(metrics_api.router)
    app.include_router(devmail.router)
    app.include_router(console_router)
    app.state.caught_mail_dir = caught_mail_dir(settings)

    # Innermost: the request's language for the emails it queues (app.platform.i18n), behind
    # the hot paths, which queue none and so never pay for it.
    app.add_middleware(RequestLanguage)
    # The hot endpoints, answered before FastAPI routes (behind every check below).
    app.add_middleware(HotPaths, routes=app.routes)
    # Outermost first: CORS answers preflights and decorates every response, the guard refuses
    # cross-site, wrongly typed or oversized requests before any route runs.
    app.add_middleware(
        RequestGuard,
        cookie_names=cookies.names,
        allowed_origins=settings.csrf_origins,
        data_max=settings.data_max_bytes,
    )
    app.add_middleware(
        CORS,
        allow_origins=settings.origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=[
            "content-type",
            "authorization",
            "x-anonid-token",
            "x-anonid-challenge",
            "x-anonid-challenge-id",
            "x-request-id",
        ],
        expose_headers=["x-request-id", "x-anonid-challenge-id"],
        max_age=600,
    )
    # Outermost of all: every response, refusals included, gets a request id, a log line, metrics.
    app.add_middleware(RequestObserver)
    return app


def worker_app() -> FastAPI:
    """Factory for ``serve --workers N``: the parent resolved (and migrated) the database."""
    settings = load_settings()
    configure_logging(settings.log_format)
    return create_app(settings, database_url=os.environ.get(RESOLVED_URL_ENV), freeze_heap=True)


def freeze_startup_heap() -> None:
    """Exempt everything built at start (modules, routes, schemas) from the cyclic GC.

    A full collection otherwise walks those ~100,000 objects every time it runs: a pause of
    tens of milliseconds in the middle of serving (see ``bench/NOTES.md``). Run once the
    lifespan has started, so the connection pools, prepared statements and the outbox worker
    are frozen too. Only for a serving process: frozen objects are never collected, which a
    test process creating many apps should not do.
    """
    gc.collect()
    gc.freeze()
