"""A real HTTP endpoint for anonid's synchronous hooks (CONTRACT §16), run by the tests.

``HookReceiver`` serves on 127.0.0.1 (uvicorn, a port of its own), verifies every request with
``standardwebhooks`` as an application would, records what it was asked, and answers with what
the test set for each hook: a JSON object, a status, or a delay first. A request whose signature
does not verify is answered 401 and recorded as such, so a test sees it fail.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def new_hook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class Reply:
    """What the receiver answers to one hook: ``body`` as JSON (or raw bytes), after ``delay``."""

    body: Any = None
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    type: str
    data: dict[str, Any]
    headers: dict[str, str]
    verified: bool
    at: float


@dataclass
class HookReceiver:
    secret: str
    replies: dict[str, Reply] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def of(self, hook: str) -> list[Received]:
        return [r for r in self.received if r.type == hook]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        document = orjson.loads(body)
        self.received.append(
            Received(document["type"], document["data"], headers, verified, time.monotonic())
        )
        if not verified:
            return Response(b"bad signature", status_code=401)
        reply = self.replies.get(document["type"], Reply({}))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        content = reply.body if isinstance(reply.body, bytes) else orjson.dumps(reply.body)
        return Response(
            content, status_code=reply.status, media_type="application/json", headers=reply.headers
        )


@asynccontextmanager
async def hook_receiver(secret: str | None = None) -> AsyncIterator[HookReceiver]:
    """A receiver listening until the block ends."""
    receiver = HookReceiver(secret or new_hook_secret())
    app = Starlette(routes=[Route("/hooks", receiver._handle, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hooks"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


def hook_settings(receiver: HookReceiver, hooks: str, **overrides: Any) -> dict[str, Any]:
    """The settings that point anonid's hooks at ``receiver``."""
    return {
        "hook_url": receiver.url,
        "hook_secret": receiver.secret,
        "hooks": hooks,
        **overrides,
    }
