"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, collecting every message it accepts.

    server = MailServer()            # started on a free port
    settings = make_settings(database_url, smtp_url=server.url)
    msg = await server.wait_for(lambda m: m["To"] == "a@example.com")
    link = links_in(msg)[0]
    server.stop(); ...; server.start()   # down and up again on the same port

``smtputf8=True`` makes it offer SMTPUTF8 (mail to non-ASCII local parts). Optional TLS (``tls="starttls"`` or ``tls="smtps"`` with an ``ssl.SSLContext``) and AUTH
(``credentials=("user", "pass")``, then required) cover the ``smtp+starttls://`` and ``smtps://``
URL schemes.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
import warnings
from collections.abc import Callable
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd cannot tell that an smtps session is encrypted and warns about AUTH over "plain text".
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

LINK = re.compile(r"https?://[^\s\"'<>]+")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Collect:
    def __init__(self, server: MailServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        msg = message_from_bytes(raw, policy=email_policy.default)
        assert isinstance(msg, EmailMessage)
        self.server.messages.append(msg)
        self.server.envelopes.append(
            {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos)}
        )
        return "250 OK"


class MailServer:
    """aiosmtpd ``Controller`` in its own thread; ``.messages`` holds what it received, in order."""

    def __init__(
        self,
        port: int | None = None,
        *,
        tls: Literal["starttls", "smtps"] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        smtputf8: bool = False,
        autostart: bool = True,
    ) -> None:
        assert (tls is None) == (ssl_context is None), "tls and ssl_context go together"
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls = tls
        self.ssl_context = ssl_context
        self.credentials = credentials
        self.smtputf8 = smtputf8
        self.messages: list[EmailMessage] = []
        self.envelopes: list[dict[str, Any]] = []
        self._controller: Controller | None = None
        if autostart:
            self.start()

    @property
    def url(self) -> str:
        scheme = {None: "smtp", "starttls": "smtp+starttls", "smtps": "smtps"}[self.tls]
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._controller is not None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            self.credentials is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        """Listen (again) on ``self.port``."""
        if self._controller is not None:
            return
        server_kwargs: dict[str, Any] = {"enable_SMTPUTF8": self.smtputf8}
        controller_kwargs: dict[str, Any] = {}
        if self.tls == "starttls":
            server_kwargs.update(tls_context=self.ssl_context, require_starttls=True)
        elif self.tls == "smtps":
            controller_kwargs["ssl_context"] = self.ssl_context
        if self.credentials is not None:
            # aiosmtpd sees only STARTTLS as TLS; with smtps the whole session is encrypted anyway.
            server_kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=self.tls != "smtps",
            )
        controller = Controller(
            _Collect(self),
            hostname=self.host,
            port=self.port,
            **server_kwargs,
            **controller_kwargs,
        )
        # A just-stopped listener may linger for a moment; retry the bind briefly.
        deadline = time.monotonic() + 5
        while True:
            try:
                controller.start()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._controller = controller

    def stop(self) -> None:
        """Stop listening; connections are refused until ``start()``."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def wait_for(
        self, predicate: Callable[[EmailMessage], bool] = lambda m: True, timeout: float = 10.0
    ) -> EmailMessage:
        """The first received message matching ``predicate``; fails the test after ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for msg in list(self.messages):
                if predicate(msg):
                    return msg
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"no matching email within {timeout}s; got {len(self.messages)}: "
                    f"{[(m['To'], m['Subject']) for m in self.messages]}"
                )
            await asyncio.sleep(0.02)

    async def wait_for_count(self, n: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until at least ``n`` messages arrived; returns all of them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < n:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(self.messages)} of {n} emails within {timeout}s")
            await asyncio.sleep(0.02)
        return list(self.messages)

    def __enter__(self) -> MailServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None, "no text/plain part"
    return str(part.get_content())  # type: ignore[attr-defined]


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html",))
    assert part is not None, "no text/html part"
    return str(part.get_content())  # type: ignore[attr-defined]


def links_in(msg: EmailMessage) -> list[str]:
    """Every http(s) link in the plain-text part, in order."""
    return LINK.findall(text_of(msg))
