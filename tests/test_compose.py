"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

What can be known from the files alone: every command is a real ``anonid`` command with valid
options, every ``ANONID_*`` variable is a real setting with a valid value, the start order and the
health checks are declared, images are pinned, and the container does not run as root.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from app.cli import cli
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Where the Dockerfile puts the repository inside the image.
IMAGE_ROOT = "/srv/anonid"
PINNED = re.compile(r"^v?\d+(\.\d+)*([-.][\w.-]+)?$")


def _env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def _anonid_services() -> list[str]:
    return [name for name, s in SERVICES.items() if (s.get("command") or [None])[0] == "anonid"]


def _depends(service: str) -> dict[str, str]:
    deps = SERVICES[service].get("depends_on") or {}
    return {name: spec["condition"] for name, spec in deps.items()}


def test_compose_declares_the_whole_stack() -> None:
    assert set(SERVICES) >= {
        "postgres",
        "pgbouncer",
        "mailpit",
        "migrate",
        "app",
        "worker",
        "storefront",
    }
    assert {s: SERVICES[s]["command"][:2] for s in ("migrate", "app", "worker")} == {
        "migrate": ["anonid", "migrate"],
        "app": ["anonid", "serve"],
        "worker": ["anonid", "worker"],
    }


@pytest.mark.parametrize("service", _anonid_services())
def test_compose_commands_are_real_anonid_commands_with_valid_options(service: str) -> None:
    # The command tree as typer builds it for ``anonid --help`` (typer ships its own click).
    command: Any = typer.main.get_command(cli)
    args: list[str] = list(SERVICES[service]["command"][1:])
    while hasattr(command, "list_commands"):
        ctx = command.make_context("anonid", list(args), resilient_parsing=True)
        name = args.pop(0)
        assert name in command.list_commands(ctx), f"{service}: 'anonid {name}' is not a command"
        command = command.get_command(ctx, name)
    # Parsing (without running) refuses unknown options and bad values.
    command.make_context(command.name, args)


def test_compose_sets_only_real_settings_with_valid_values() -> None:
    fields = set(Settings.model_fields)
    for name in _anonid_services():
        env = _env(name)
        assert env, f"{name} sets no settings"
        values: dict[str, str] = {}
        for key, value in env.items():
            assert key.startswith("ANONID_"), f"{name}: {key} is not an anonid setting"
            field = key.removeprefix("ANONID_").lower()
            assert field in fields, f"{name}: {key} is not a setting of app.settings.Settings"
            values[field] = value
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        assert not settings.embedded, f"{name} would start an embedded PostgreSQL"
        assert urlsplit(settings.smtp_url or "").hostname == "mailpit"


def test_compose_app_only_serves_and_the_worker_delivers() -> None:
    assert _env("app")["ANONID_RUN_WORKER"] == "false"
    assert _env("worker").get("ANONID_RUN_WORKER", "true") != "false"
    assert SERVICES["app"]["command"][2:4] == ["--host", "0.0.0.0"]


def test_compose_starts_in_order_behind_a_one_shot_migration() -> None:
    assert _depends("migrate") == {"postgres": "service_healthy"}
    assert SERVICES["migrate"].get("restart", "no") == "no"
    for service in ("app", "worker"):
        assert _depends(service)["migrate"] == "service_completed_successfully"
    assert _depends("worker")["mailpit"] == "service_healthy"
    assert _depends("storefront") == {"app": "service_healthy"}
    # Every dependency that waits for health has a health check to wait for.
    for service in SERVICES:
        for target, condition in _depends(service).items():
            if condition == "service_healthy":
                assert SERVICES[target].get("healthcheck", {}).get("test"), target


def test_compose_health_checks_probe_the_right_thing() -> None:
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(SERVICES["app"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(SERVICES["storefront"]["healthcheck"]["test"])
    assert SERVICES["mailpit"]["healthcheck"]["test"]


def test_compose_keeps_postgres_data_in_a_volume_and_exposes_mailpit() -> None:
    volume = SERVICES["postgres"]["volumes"][0].split(":")
    assert volume[0] in COMPOSE["volumes"]
    assert volume[1] == "/var/lib/postgresql/data"
    assert "8025:8025" in SERVICES["mailpit"]["ports"]
    assert any(urlsplit(_env(s)["ANONID_SMTP_URL"]).port == 1025 for s in _anonid_services())


def test_compose_images_are_pinned_to_a_version() -> None:
    for name, service in SERVICES.items():
        if "build" in service:
            continue
        image = service["image"]
        assert ":" in image, f"{name}: {image} has no tag"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and PINNED.match(tag), f"{name}: {image} is not pinned"
    bases = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert bases
    for base in bases:
        name, _, tag = base.partition(":")
        assert name == "python" and re.match(r"^3\.\d+-slim", tag), base


def test_dockerfile_runs_as_non_root_with_dependencies_in_their_own_layer() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0")
    lines = [line.strip() for line in DOCKERFILE.splitlines()]
    last_user = max(i for i, line in enumerate(lines) if line.startswith("USER "))
    assert not any(line.startswith("RUN ") for line in lines[last_user:]), "RUN after USER"
    copy_deps = lines.index("COPY pyproject.toml ./")
    install_deps = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    copy_source = lines.index("COPY app ./app")
    assert copy_deps < install_deps < copy_source


def test_compose_storefront_shares_anonid_host_and_is_an_allowed_origin() -> None:
    storefront = SERVICES["storefront"]
    anonid_env = _env("app")
    shop_env = _env("storefront")
    public = urlsplit(anonid_env["ANONID_PUBLIC_URL"])
    # The browser's URL for anonid is the tokens' issuer, so offline verification accepts them.
    assert shop_env["STOREFRONT_ANONID_URL"] == anonid_env["ANONID_PUBLIC_URL"]
    assert urlsplit(shop_env["STOREFRONT_ANONID_API_URL"]).hostname == "app"
    published = storefront["ports"][0].split(":")[0]
    shop_origin = f"http://{public.hostname}:{published}"
    assert shop_origin in anonid_env["ANONID_ALLOWED_ORIGINS"].split(",")
    # ``python -m storefront`` runs from the example's folder, which the image contains.
    workdir = Path(storefront["working_dir"])
    local = ROOT / workdir.relative_to(IMAGE_ROOT)
    assert storefront["command"][:3] == ["python", "-m", "storefront"]
    assert (local / "storefront" / "__main__.py").is_file()
    assert "COPY examples ./examples" in DOCKERFILE
    # Its backend imports anonid_client, installed in the image from clients/python.
    assert "COPY clients/python ./clients/python" in DOCKERFILE
    assert re.search(r"^RUN pip install --no-deps -e \. \./clients/python", DOCKERFILE, re.M)


def test_compose_puts_pgbouncer_in_transaction_mode_between_anonid_and_postgres() -> None:
    bouncer = {k: str(v) for k, v in SERVICES["pgbouncer"]["environment"].items()}
    assert bouncer["POOL_MODE"] == "transaction"
    assert urlsplit(bouncer["DATABASE_URL"]).hostname == "postgres"
    assert _depends("pgbouncer") == {"postgres": "service_healthy"}
    listen = int(bouncer["LISTEN_PORT"])
    for service in ("migrate", "app", "worker"):
        env = _env(service)
        pooled, direct = (
            urlsplit(env["ANONID_DATABASE_URL"]),
            urlsplit(env["ANONID_DATABASE_DIRECT_URL"]),
        )
        assert (pooled.hostname, pooled.port) == ("pgbouncer", listen), service
        # Migrations, LISTEN and the cull's lock need a session of their own.
        assert (direct.hostname, direct.port) == ("postgres", 5432), service
        assert pooled.path == direct.path
    for service in ("app", "worker"):
        assert _depends(service)["pgbouncer"] == "service_started"
    # Every process's pooled connections fit the pooler's client limit; the pooler's server
    # connections and two direct ones per process fit PostgreSQL's default of 100.
    processes = ("app", "worker")
    pool_sizes = [int(_env(s)["ANONID_DATABASE_POOL_SIZE"]) for s in processes]
    assert sum(pool_sizes) <= int(bouncer["MAX_CLIENT_CONN"])
    assert int(bouncer["DEFAULT_POOL_SIZE"]) + 2 * len(processes) + 1 < 100
