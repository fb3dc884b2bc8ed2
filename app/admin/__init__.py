"""The operators' console at ``/admin`` (CONTRACT §17): server-rendered pages signed in with the
admin key (``session``), each page a module of its own; templates in ``app/templates/admin/``."""

from __future__ import annotations

from fastapi import APIRouter

from app.admin import cull, outbox, overview, signin, users

router = APIRouter(include_in_schema=False)
for module in (signin, overview, users, outbox, cull):
    router.include_router(module.router)
