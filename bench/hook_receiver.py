"""The application side of the ``custom_claims`` hook for the hooks phase: a minimal Starlette
app that checks the Standard Webhooks signature (one HMAC) and answers the same small claims for
every user, so what the phase measures is anonid's side of the call, not a slow receiver.

    HOOK_SECRET=whsec_… uvicorn hook_receiver:app --app-dir bench
"""

from __future__ import annotations

import os

import orjson
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

WEBHOOK = Webhook(os.environ["HOOK_SECRET"])
ANSWER = orjson.dumps({"claims": {"plan": "free", "roles": ["guest"]}})


async def hook(request: Request) -> Response:
    body = await request.body()
    try:
        call = WEBHOOK.verify(body, dict(request.headers))
    except Exception:  # a bad signature: the hook fails, which the phase would count as errors
        return Response(status_code=401)
    if call.get("type") != "custom_claims":
        return Response(status_code=400)
    return Response(ANSWER, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/", ready)])
