"""A real PgBouncer (Debian's ``pgbouncer``, 1.18) in transaction mode in front of the test server.

The tests start it themselves on a free loopback port with a config they write. Without the
``pgbouncer`` program the tests fail (``.ci/run`` installs it): a topology nobody tested is
exactly what this suite exists to prevent.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest

from tests.browser import ensure_debian_package
from tests.processes import free_port, terminate

PORTS = (18500, 18600)


def pgbouncer_program() -> str:
    """Debian's PgBouncer, installed with apt-get first where it is missing (as the browser tests
    install chromium), so the README's test command works on a fresh machine; where it cannot be
    installed the tests fail, never skip."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is not None:
        return found
    try:
        return ensure_debian_package("/usr/sbin/pgbouncer", "pgbouncer")
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"the transaction-pooler tests need Debian's pgbouncer, not installed: {exc}")


@dataclass(frozen=True)
class Bouncer:
    port: int
    server_url: str  # the PostgreSQL behind it

    def url(self, database: str) -> str:
        """``database`` on the server, through the pooler."""
        parts = urlsplit(self.server_url)
        user = parts.username or "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def _server_address(server_url: str) -> tuple[str, int, str]:
    parts = urlsplit(server_url)
    socket_dir = parse_qs(parts.query).get("host", [None])[0]
    host = socket_dir or parts.hostname or "127.0.0.1"
    return host, parts.port or 5432, parts.username or "postgres"


def _unprivileged_user(host: str) -> str:
    """Who PgBouncer runs as when the tests run as root (it refuses root): the owner of the
    server's socket directory when it listens on one (the embedded server's data directory is
    private to its owner), else nobody."""
    if host.startswith("/"):
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


@contextmanager
def pgbouncer(server_url: str, *, pool_size: int = 20) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of ``server_url``'s server (every database)."""
    program = pgbouncer_program()
    host, port, user = _server_address(server_url)
    listen = free_port(*PORTS)
    workdir = Path(tempfile.mkdtemp(prefix="anonid-pgbouncer-"))
    workdir.chmod(0o755)  # PgBouncer refuses to run as root; as another user it reads from here
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
; the backstop for a statement the client could not cancel (see the README)
query_timeout = 60
"""
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (workdir / name).chmod(0o644)
    args = [program, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        args[1:1] = ["-u", _unprivileged_user(host)]
    log = (workdir / "pgbouncer.log").open("w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"pgbouncer exited: {(workdir / 'pgbouncer.log').read_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", listen)) == 0:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("pgbouncer did not start listening")
            time.sleep(0.1)
        yield Bouncer(listen, server_url)
    finally:
        terminate(proc, grace=10)  # type: ignore[arg-type]
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
