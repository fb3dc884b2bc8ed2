"""The ``anonid`` command. Every failure of settings or database is one line on stderr, exit 1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from app.platform.db import (
    RESOLVED_URL_ENV,
    DatabaseError,
    check_database,
    create_engine,
    describe,
    ensure_reachable,
    migration_url,
    open_databases,
    resolve_database_url,
    upgrade_to_head,
)
from app.platform.logs import configure_logging
from app.settings import Settings, SettingsError, load_settings

cli = typer.Typer(
    name="anonid",
    help="anonid: a self-hosted identity store for anonymous and registered accounts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_cli = typer.Typer(help="Signing keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    typer.echo(f"anonid: {message}", err=True)
    raise typer.Exit(1)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        fail(str(exc))
    configure_logging(settings.log_format)
    return settings


def _database(settings: Settings, *, migrate: bool | None = None) -> str:
    """The database URL, reachable and at the migration head (migrating if asked to)."""
    try:
        url = resolve_database_url(settings)
    except Exception as exc:
        fail(f"cannot start the embedded PostgreSQL under {settings.data_dir}: {describe(exc)}")
    try:
        asyncio.run(ensure_reachable(url))
        if settings.should_auto_migrate if migrate is None else migrate:
            upgrade_to_head(migration_url(settings, url))
        asyncio.run(check_database(url))
    except DatabaseError as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"migration failed: {describe(exc)}")
    return url


def _run(coro_factory: Callable[[], Any]) -> Any:
    try:
        return asyncio.run(coro_factory())
    except DatabaseError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot reach the database: {describe(exc)}")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve HTTP (with the embedded PostgreSQL when no database is configured)."""
    import uvicorn

    settings = _settings()
    url = _database(settings)
    # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit here lets
    # finally blocks and atexit run, which is what stops the embedded PostgreSQL cleanly.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    where = f"embedded PostgreSQL in {settings.data_dir}" if settings.embedded else "PostgreSQL"
    typer.echo(f"anonid: serving on http://{host}:{port} ({where})", err=True)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,
        # anonid writes its own access line (route template, never the query string).
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
    }
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 (comparison)
    with _mail_target(settings, f"http://{shown}:{port}/dev/mail"):
        if workers == 1:
            from app.main import create_app

            uvicorn.run(create_app(settings, database_url=url, freeze_heap=True), **common)
        else:
            from app.platform.metrics import multiprocess_directory

            os.environ[RESOLVED_URL_ENV] = url
            # Workers share one metrics directory so /metrics adds up every worker's series.
            with multiprocess_directory():
                uvicorn.run("app.main:worker_app", factory=True, workers=workers, **common)


@contextlib.contextmanager
def _mail_target(settings: Settings, inbox: str) -> Iterator[str]:
    """Where email goes: ``ANONID_SMTP_URL``, else a local catcher running for the block."""
    if settings.smtp_url:
        yield settings.smtp_url
        return
    from app.platform.catcher import LocalCatcher, mail_dir

    catcher = LocalCatcher(mail_dir(settings)).start()
    # The app (and every `serve --workers N` child) finds the catcher through the environment.
    os.environ.update(catcher.environment())
    typer.echo(
        f"anonid: no ANONID_SMTP_URL, so emails are caught locally: read them at {inbox} "
        f"(files in {catcher.directory})",
        err=True,
    )
    try:
        yield catcher.url
    finally:
        catcher.stop()


@cli.command()
def worker() -> None:
    """Deliver the outbox (emails, webhooks) and run the scheduled cull, until stopped."""
    from app.outbox.worker import OutboxWorker

    settings = _settings()
    url = _database(settings)

    async def go(smtp_url: str) -> None:
        databases = await open_databases(settings, url)
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await OutboxWorker(
                databases.engine,
                settings,
                smtp_url=smtp_url,
                listen_url=databases.topology.direct_url,
                lock_engine=databases.direct,
            ).run()
        except asyncio.CancelledError:
            pass  # stopped by a signal, claims handed back
        finally:
            await databases.dispose()

    with _mail_target(settings, "/dev/mail of `anonid serve`") as smtp_url:
        typer.echo("anonid: worker delivering the outbox; stop with Ctrl-C or SIGTERM", err=True)
        _run(lambda: go(smtp_url))


@cli.command()
def migrate() -> None:
    """Upgrade the database schema to head (alembic upgrade head)."""
    settings = _settings()
    _database(settings, migrate=True)
    typer.echo("anonid: database is at the migration head", err=True)


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key current; older keys stay in JWKS until their tokens expire."""
    from app.sessions.keys import rotate_signing_key

    settings = _settings()
    url = _database(settings, migrate=False)

    async def rotate() -> str:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                return await rotate_signing_key(conn)
        finally:
            await engine.dispose()

    kid = _run(rotate)
    typer.echo(kid)


@cli.command()
def demo(
    port: Annotated[int, typer.Option(help="Port for anonid.")] = 8000,
    storefront_port: Annotated[int, typer.Option(help="Port for the demo storefront.")] = 8001,
) -> None:
    """Run anonid (embedded PostgreSQL, local mail catcher) and the demo storefront together."""
    from app import demo as demo_

    if not demo_.storefront_available():
        fail(f"the demo storefront is not in {demo_.STOREFRONT_DIR}; run this from a clone")
    for option, number in (("--port", port), ("--storefront-port", storefront_port)):
        if demo_.port_in_use(number):
            fail(f"port {number} is in use; choose another with {option}")
    os.environ.update(demo_.demo_settings(port, storefront_port))
    storefront = demo_.start_storefront(port, storefront_port)
    try:
        demo_.announce_when_ready(port, storefront_port, lambda text: typer.echo(text, err=True))
        serve(host=demo_.HOST, port=port, workers=1)
    finally:
        demo_.stop(storefront)


@cli.command()
def cull(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count, delete nothing.")] = False,
    older_than_days: Annotated[
        int | None,
        typer.Option(min=1, max=36500, help="Override ANONID_CULL_AFTER_DAYS for this run."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10000, help="Rows per batch.")] = 1000,
) -> None:
    """Delete stale anonymous accounts now; prints one JSON object."""
    import orjson

    from app.lifecycle.cull import run_cull

    settings = _settings()
    url = _database(settings, migrate=False)

    async def go() -> dict[str, Any]:
        # Two pooled connections: without a direct URL the lock holds one of them.
        databases = await open_databases(settings, url, pool_size=2)
        try:
            return await run_cull(
                databases.engine,
                settings,
                dry_run=dry_run,
                older_than_days=older_than_days,
                batch_size=batch_size,
                lock_engine=databases.direct,
            )
        finally:
            await databases.dispose()

    typer.echo(orjson.dumps(_run(go)).decode())


@cli.command()
def stats() -> None:
    """Print the same JSON as GET /v1/admin/stats."""
    import orjson

    from app.lifecycle.stats import collect_stats

    settings = _settings()
    url = _database(settings, migrate=False)

    async def go() -> dict[str, Any]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                return await collect_stats(conn)
        finally:
            await engine.dispose()

    typer.echo(orjson.dumps(_run(go)).decode())


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
