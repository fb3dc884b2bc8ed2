"""Migrations: upgrade a populated database, downgrade to base, and agree with ``app.models``."""

from __future__ import annotations

import asyncio
import secrets
import uuid

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.lifecycle.addresses import email_key
from app.lifecycle.rollup import roll_up
from app.lifecycle.stats import collect_stats
from app.models import metadata
from app.platform.db import ALEMBIC_INI, create_engine, migration_head


@pytest.fixture
async def scratch_url(server_url: str):
    name = "anonid_mig_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    if "?" in server_url:
        base, query = server_url.split("?", 1)
        url = base.rsplit("/", 1)[0] + f"/{name}?{query}"
    else:
        url = server_url.rsplit("/", 1)[0] + f"/{name}"
    yield url
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def _alembic(url: str, *args: str) -> None:
    config = Config(str(ALEMBIC_INI))
    config.attributes["url"] = url
    getattr(command, args[0])(config, *args[1:])


async def test_every_migration_downgrades_and_upgrades_again_keeping_rows(scratch_url: str) -> None:
    await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")
    engine = create_engine(scratch_url, pool_size=1)
    user_id = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous, data) "
                    "VALUES (:id, 'guest-keep', true, '{\"k\": 1}')"
                ),
                {"id": user_id},
            )
        # Step down one revision at a time to just above base and back up: later migrations
        # must keep the rows the first one created.
        async with engine.connect() as conn:
            revision = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        assert revision == migration_head()
        await asyncio.to_thread(_alembic, scratch_url, "downgrade", "0001")
        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")
        async with engine.connect() as conn:
            data = await conn.scalar(
                sa.text("SELECT data FROM users WHERE id = :id"), {"id": user_id}
            )
        assert data == {"k": 1}

        await engine.dispose()
        await asyncio.to_thread(_alembic, scratch_url, "downgrade", "base")
        async with engine.connect() as conn:
            left = await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
            functions = await conn.scalar(
                sa.text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'jsonb_merge%'")
            )
        assert left == 0 and functions == 0
        await engine.dispose()
        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")
    finally:
        await engine.dispose()


async def test_models_match_the_migrated_schema(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:

            def diff(sync_conn: sa.Connection) -> list:
                context = MigrationContext.configure(sync_conn)
                return compare_metadata(context, metadata)

            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []


async def test_check_constraint_keeps_anonymous_rows_free_of_credentials(engine) -> None:
    async with engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous, email, data) "
                    "VALUES (:id, :u, true, 'x@example.com', '{}')"
                ),
                {"id": uuid.uuid4(), "u": "guest-" + secrets.token_hex(4)},
            )
        await conn.rollback()
        with pytest.raises(sa.exc.IntegrityError):
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous, password_hash, data) "
                    "VALUES (:id, :u, true, 'hash', '{}')"
                ),
                {"id": uuid.uuid4(), "u": "guest-" + secrets.token_hex(4)},
            )
        await conn.rollback()


async def test_verified_email_is_unique_in_its_normal_form(engine) -> None:
    # Case-insensitive uniqueness is the app's normal form (tests/test_addresses.py) plus a
    # unique index on the stored form, compared with "=": PostgreSQL never case-maps.
    email = email_key(f"Case{secrets.token_hex(3)}@Example.com")
    insert = sa.text(
        "INSERT INTO users (id, is_anonymous, email, password_hash, data) "
        "VALUES (:id, false, :e, 'h', '{}')"
    )
    async with engine.begin() as conn:
        await conn.execute(insert, {"id": uuid.uuid4(), "e": email})
    async with engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError, match="uq_users_email"):
            await conn.execute(insert, {"id": uuid.uuid4(), "e": email})
        await conn.rollback()


def _before_0005() -> str:
    revision = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_revision("0005")
    assert revision is not None and isinstance(revision.down_revision, str)
    return revision.down_revision


_REGISTERED = sa.text(
    "INSERT INTO users (id, is_anonymous, email, password_hash, data, created_at) "
    "VALUES (:id, false, :e, 'h', '{\"kept\": true}', now() - make_interval(secs => :age))"
)


async def _indexes(conn: sa.ext.asyncio.AsyncConnection) -> set[str]:
    rows = await conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'users'"))
    return {r.indexname for r in rows}


async def test_migration_0005_normalises_the_addresses_of_a_populated_database(
    scratch_url: str,
) -> None:
    await asyncio.to_thread(_alembic, scratch_url, "upgrade", _before_0005())
    engine = create_engine(scratch_url, pool_size=1)
    typed = {
        "Alice@Example.COM": "alice@example.com",
        "Jose\u0301@B\u00fccher.Example": "jos\u00e9@xn--bcher-kva.example",
        "al\u0130ce@example.net": "ali\u0307ce@example.net",
    }
    ids = {email: uuid.uuid4() for email in typed}
    guest = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            for age, (email, user_id) in enumerate(ids.items()):
                await conn.execute(_REGISTERED, {"id": user_id, "e": email, "age": age})
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous, pending_email, pending_until)"
                    " VALUES (:id, 'guest-mig', true, 'Later@B\u00dcCHER.example',"
                    " now() + interval '1 day')"
                ),
                {"id": guest},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO link_tokens (token_hash, user_id, purpose, email, expires_at)"
                    " VALUES ('\\x01', :id, 'setup', 'Later@B\u00dcCHER.example',"
                    " now() + interval '1 day')"
                ),
                {"id": guest},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO outbox (kind, user_id, payload) VALUES ('email', :id,"
                    ' \'{"to": "Later@B\u00dcCHER.example", "email_kind": "x"}\')'
                ),
                {"id": guest},
            )

        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")

        later = "later@xn--bcher-kva.example"
        async with engine.connect() as conn:
            for email, user_id in ids.items():
                row = (
                    await conn.execute(
                        sa.text("SELECT email, data FROM users WHERE id = :id"), {"id": user_id}
                    )
                ).one()
                assert (row.email, row.data) == (typed[email], {"kept": True}), email
            pending = await conn.scalar(
                sa.text("SELECT pending_email FROM users WHERE id = :id"), {"id": guest}
            )
            link = await conn.scalar(sa.text("SELECT email FROM link_tokens"))
            to = await conn.scalar(sa.text("SELECT payload ->> 'to' FROM outbox"))
            assert pending == link == to == later
            indexes = await _indexes(conn)
            assert "uq_users_email" in indexes and "uq_users_email_lower" not in indexes

        await engine.dispose()
        await asyncio.to_thread(_alembic, scratch_url, "downgrade", _before_0005())
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM users")) == 4
            indexes = await _indexes(conn)
            assert "uq_users_email_lower" in indexes and "uq_users_email" not in indexes
    finally:
        await engine.dispose()


async def test_migration_0005_refuses_addresses_that_collide_once_normalised(
    scratch_url: str,
) -> None:
    await asyncio.to_thread(_alembic, scratch_url, "upgrade", _before_0005())
    engine = create_engine(scratch_url, pool_size=1)
    # NFC and NFD spellings of one address: two rows under lower(email), one normal form.
    older, newer = uuid.uuid4(), uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(_REGISTERED, {"id": older, "e": "\u00e9@x.example", "age": 10})
            await conn.execute(_REGISTERED, {"id": newer, "e": "E\u0301@x.example", "age": 0})
        with pytest.raises(RuntimeError, match="refused") as refused:
            await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")
        assert f"{older} and {newer}" in str(refused.value)
        async with engine.connect() as conn:
            revision = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            emails = set(await conn.scalars(sa.text("SELECT email FROM users")))
            assert "uq_users_email_lower" in await _indexes(conn)
        assert revision == _before_0005()
        assert emails == {"\u00e9@x.example", "E\u0301@x.example"}  # nothing changed

        # Once an operator has resolved the pair, the migration runs.
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM users WHERE id = :id"), {"id": newer})
        await engine.dispose()
        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")
    finally:
        await engine.dispose()


async def test_migration_0007_upgrades_a_populated_database_and_stats_read_it(
    scratch_url: str,
) -> None:
    await asyncio.to_thread(_alembic, scratch_url, "upgrade", "0005")
    engine = create_engine(scratch_url, pool_size=1)
    tables = ("users", "events", "outbox", "link_tokens")
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous, updated_at)"
                    " SELECT gen_random_uuid(), 'g' || g, true, now() - g * interval '1 day'"
                    " FROM generate_series(1, 50) g"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO events (id, type, created_at)"
                    " SELECT gen_random_uuid(), 'user.anonymous_created',"
                    " now() - (g % 5) * interval '1 day' FROM generate_series(1, 50) g"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO outbox (kind, payload, sent_at)"
                    " SELECT 'webhook', '{}', now() - g * interval '1 day'"
                    " FROM generate_series(1, 20) g"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO link_tokens (token_hash, user_id, purpose, email, expires_at)"
                    " SELECT decode(md5(id::text), 'hex'), id, 'setup', 'a@x.test', now()"
                    " FROM users LIMIT 5"
                )
            )
        before = await _counts(engine, tables)
        await engine.dispose()

        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")
        assert await _counts(engine, tables) == before
        async with engine.begin() as conn:
            stats = await collect_stats(conn)
            rolled = await roll_up(conn)
        # The new tables start empty: stats count the events themselves until the worker rolls up.
        assert sum(d["anonymous_created"] for d in stats["daily"]) == 50
        assert stats["users"]["anonymous"] == 50 and stats["outbox"]["pending"] == 0
        assert rolled > 0
        async with engine.begin() as conn:
            assert (await collect_stats(conn))["daily"] == stats["daily"]
        await engine.dispose()

        await asyncio.to_thread(_alembic, scratch_url, "downgrade", "0005")
        assert await _counts(engine, tables) == before
        async with engine.connect() as conn:
            left = await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_tables WHERE tablename IN ('daily_stats', 'stats_counts')"
                )
            )
        assert left == 0
    finally:
        await engine.dispose()


async def _counts(engine, tables: tuple[str, ...]) -> dict[str, int]:
    async with engine.connect() as conn:
        return {t: await conn.scalar(sa.text(f"SELECT count(*) FROM {t}")) for t in tables}


async def test_migration_0011_upgrades_a_populated_database_and_registered_accounts_may_lack_an_address(
    scratch_url: str,
) -> None:
    await asyncio.to_thread(_alembic, scratch_url, "upgrade", "0008")
    engine = create_engine(scratch_url, pool_size=1)
    member = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous)"
                    " SELECT gen_random_uuid(), 'g' || g, true FROM generate_series(1, 20) g"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, is_anonymous, email, password_hash, data)"
                    " VALUES (:id, false, 'member@x.test', 'hash', '{\"k\": 1}')"
                ),
                {"id": member},
            )
        before = await _counts(engine, ("users", "events"))
        await engine.dispose()

        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "0011")
        assert await _counts(engine, ("users", "events")) == before
        async with engine.begin() as conn:
            # The member may now swap its address for an identity, in one transaction.
            await conn.execute(
                sa.text(
                    "INSERT INTO identities (id, user_id, provider, subject) "
                    "VALUES (gen_random_uuid(), :id, 'op', 'sub-1')"
                ),
                {"id": member},
            )
            await conn.execute(
                sa.text("UPDATE users SET email = NULL WHERE id = :id"), {"id": member}
            )
        await engine.dispose()

        # Going back cannot represent that account: the downgrade refuses and changes nothing.
        with pytest.raises(sa.exc.IntegrityError):
            await asyncio.to_thread(_alembic, scratch_url, "downgrade", "0008")
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE users SET email = 'member@x.test' WHERE id = :id"), {"id": member}
            )
        await engine.dispose()
        await asyncio.to_thread(_alembic, scratch_url, "downgrade", "0008")
        assert await _counts(engine, ("users", "events")) == before
    finally:
        await engine.dispose()


async def test_migration_0013_upgrades_a_populated_database_and_an_account_may_keep_only_a_passkey(
    scratch_url: str,
) -> None:
    # The revision before 0013, whichever it is once the migrations are chained.
    before_passkeys = (
        ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_revision("0013").down_revision
    )
    assert isinstance(before_passkeys, str)
    await asyncio.to_thread(_alembic, scratch_url, "upgrade", before_passkeys)
    engine = create_engine(scratch_url, pool_size=1)
    member = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous)"
                    " SELECT gen_random_uuid(), 'g' || g, true FROM generate_series(1, 20) g"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, is_anonymous, email, data)"
                    " VALUES (:id, false, 'member@x.test', '{\"k\": 1}')"
                ),
                {"id": member},
            )
        before = await _counts(engine, ("users", "events", "identities"))
        await engine.dispose()

        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "0013")
        assert await _counts(engine, ("users", "events", "identities")) == before
        async with engine.begin() as conn:
            # The member may now swap its address for a passkey, in one transaction.
            await conn.execute(
                sa.text(
                    "INSERT INTO passkeys (id, user_id, credential_id, public_key, name)"
                    " VALUES (gen_random_uuid(), :id, '\\x01', '\\x02', 'Laptop')"
                ),
                {"id": member},
            )
            await conn.execute(
                sa.text("UPDATE users SET email = NULL WHERE id = :id"), {"id": member}
            )
        await engine.dispose()

        # Going back cannot represent that account: the downgrade refuses and changes nothing.
        with pytest.raises(sa.exc.IntegrityError, match="signs in with passkeys only"):
            await asyncio.to_thread(_alembic, scratch_url, "downgrade", before_passkeys)
        assert await _counts(engine, ("passkeys",)) == {"passkeys": 1}
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE users SET email = 'member@x.test' WHERE id = :id"), {"id": member}
            )
        await engine.dispose()
        await asyncio.to_thread(_alembic, scratch_url, "downgrade", before_passkeys)
        assert await _counts(engine, ("users", "events", "identities")) == before
        # Back before 0013 the rule names addresses and identities only, as it did.
        async with engine.connect() as conn:
            with pytest.raises(sa.exc.IntegrityError, match="needs an address or an identity\n"):
                async with conn.begin():
                    await conn.execute(
                        sa.text("UPDATE users SET email = NULL WHERE id = :id"), {"id": member}
                    )
    finally:
        await engine.dispose()


async def test_migration_0012_gives_links_codes_and_accounts_their_methods_on_a_populated_database(
    scratch_url: str,
) -> None:
    await asyncio.to_thread(_alembic, scratch_url, "upgrade", "0011")
    engine = create_engine(scratch_url, pool_size=1)
    member, guest = uuid.uuid4(), uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous) VALUES (:g, 'guest-0012', true)"
                ),
                {"g": guest},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, is_anonymous, email, password_hash)"
                    " VALUES (:m, false, 'member0012@x.test', 'hash')"
                ),
                {"m": member},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO identities (id, user_id, provider, subject)"
                    " VALUES (gen_random_uuid(), :m, 'op', 'sub-0012')"
                ),
                {"m": member},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO link_tokens (token_hash, user_id, purpose, email, expires_at)"
                    " VALUES ('\\x01', :g, 'setup', 'g@x.test', now() + interval '1 day')"
                ),
                {"g": guest},
            )
        before = await _counts(engine, ("users", "link_tokens", "identities"))
        await engine.dispose()

        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "0012")
        assert await _counts(engine, ("users", "link_tokens", "identities")) == before
        async with engine.begin() as conn:
            link = (await conn.execute(sa.text("SELECT * FROM link_tokens"))).one()
            assert link.code_hash is None and link.code_attempts == 0
            methods = await conn.scalar(
                sa.text("SELECT anonid_sign_in_methods(:m, true, true)"), {"m": member}
            )
            assert methods == ["password", "email", "oidc:op"]
            await conn.execute(
                sa.text(
                    "INSERT INTO link_tokens (token_hash, user_id, purpose, email, expires_at,"
                    " code_hash, code_expires_at) VALUES ('\\x02', :m, 'login', 'member0012@x.test',"
                    " now() + interval '10 minutes', '\\x03', now() + interval '10 minutes')"
                ),
                {"m": member},
            )
            with pytest.raises(sa.exc.IntegrityError):  # a code needs its expiry
                async with conn.begin_nested():
                    await conn.execute(
                        sa.text(
                            "INSERT INTO link_tokens (token_hash, user_id, purpose, email,"
                            " expires_at, code_hash) VALUES ('\\x04', :m, 'login', 'm@x.test',"
                            " now(), '\\x05')"
                        ),
                        {"m": member},
                    )
        await engine.dispose()

        # Back down: sign-in links cannot be kept; everything else is.
        await asyncio.to_thread(_alembic, scratch_url, "downgrade", "0011")
        assert await _counts(engine, ("users", "link_tokens", "identities")) == before
        async with engine.connect() as conn:
            functions = await conn.scalar(
                sa.text("SELECT count(*) FROM pg_proc WHERE proname = 'anonid_sign_in_methods'")
            )
        assert functions == 0
    finally:
        await engine.dispose()
