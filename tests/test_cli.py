"""The ``anonid`` command: zero-setup serve on embedded PostgreSQL, clear one-line refusals."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx
import psutil

from tests.processes import Served, clean_env, free_port, run


def _postgres_running_in(data_dir: Path) -> bool:
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in " ".join(
            proc.info["cmdline"] or []
        ):
            return True
    return False


def test_serve_in_an_empty_folder_starts_embedded_postgres_and_reuses_it(tmp_path: Path) -> None:
    env = clean_env()
    served = Served(tmp_path, env, free_port(18000, 18050))
    try:
        served.wait_ready()
        r = httpx.post(served.base + "/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
        assert r.status_code == 201
        token = r.json()["access_token"]
        assert "set-cookie" not in r.headers
        assert httpx.get(served.base + "/readyz").json() == {"status": "ready"}
    finally:
        assert served.stop() == 0
    data_dir = (tmp_path / ".anonid").resolve()
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    assert not _postgres_running_in(data_dir), "embedded PostgreSQL outlived anonid serve"

    again = Served(tmp_path, env, free_port(18050, 18099))
    try:
        again.wait_ready()
        me = httpx.get(again.base + "/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text  # same data, same signing key
    finally:
        again.stop()


def _one_line_refusal(result) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_cull_not_longer_than_cookie_lifetime_refuses_to_start(tmp_path: Path) -> None:
    env = clean_env(ANONID_CULL_AFTER_DAYS="30", ANONID_ANONYMOUS_TTL_DAYS="30")
    line = _one_line_refusal(run(["serve"], tmp_path, env))
    assert "ANONID_CULL_AFTER_DAYS" in line


def test_bad_setting_value_is_one_clear_line(tmp_path: Path) -> None:
    line = _one_line_refusal(run(["migrate"], tmp_path, clean_env(ANONID_SESSION_TTL_DAYS="soon")))
    assert "ANONID_SESSION_TTL_DAYS" in line
    line = _one_line_refusal(run(["migrate"], tmp_path, clean_env(ANONID_SMTP_URL="ftp://x")))
    assert "ANONID_SMTP_URL" in line


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port(18000, 18099)
    env = clean_env(ANONID_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/nope")
    for command in (["serve"], ["migrate"], ["keys", "rotate"]):
        line = _one_line_refusal(run(command, tmp_path, env))
        assert "cannot reach the database" in line


async def test_unmigrated_external_database_is_refused_unless_auto_migrate(
    tmp_path: Path, server_url: str
) -> None:
    name = "anonid_cli_" + tmp_path.name[-8:].replace("-", "_").lower()
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = (
        server_url.rsplit("/", 1)[0] + "/" + name
        if "?" not in server_url
        else server_url.replace("/postgres?", f"/{name}?")
    )
    try:
        env = clean_env(ANONID_DATABASE_URL=url)
        line = _one_line_refusal(run(["serve"], tmp_path, env))
        assert "not migrated" in line
        migrated = run(["migrate"], tmp_path, env)
        assert migrated.returncode == 0, migrated.stderr
        rotated = run(["keys", "rotate"], tmp_path, env)
        assert rotated.returncode == 0 and rotated.stdout.strip(), rotated.stderr
    finally:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
