"""``GET /metrics``: Prometheus text format (see ``app.platform.metrics`` for the series)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import services
from app.platform import metrics

router = APIRouter()


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "Prometheus text"}},
)
async def prometheus(request: Request) -> Response:
    svc = services(request)
    gauges = svc.extras.get("metrics_gauges")
    if gauges is None:
        gauges = svc.extras["metrics_gauges"] = metrics.DatabaseGauges(svc.engine)
    await gauges.refresh()
    return Response(
        metrics.exposition(),
        media_type=metrics.CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},
    )
