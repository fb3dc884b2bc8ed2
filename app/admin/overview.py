"""The console's overview: the daily funnel over 30 or 90 days, conversion, MAU, outbox depth.

One transaction of ``collect_stats`` (the admin API's ``GET /v1/admin/stats``): the funnel from
the ``daily_stats`` rollup, the account counts and MAU from the worker's recount, the outbox
depth through its partial indexes, so the page costs the same at 20 million accounts.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.admin.charts import FUNNEL, funnel_chart, mau_bar
from app.admin.render import page, signed_in, to_sign_in
from app.api.deps import services
from app.lifecycle.stats import collect_stats

router = APIRouter()

WINDOWS = (30, 90)


@router.get("/admin")
async def overview(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return to_sign_in()
    asked = request.query_params.get("days", "")
    days = int(asked) if asked.isdigit() and int(asked) in WINDOWS else WINDOWS[0]
    async with services(request).engine.begin() as conn:
        stats = await collect_stats(conn, days)
    daily = stats["daily"]
    totals = {key: sum(day[key] for day in daily) for key, _, _ in FUNNEL}
    return page(
        request,
        "overview.html",
        session=session,
        title="Overview",
        stats=stats,
        days=days,
        windows=WINDOWS,
        figures=FUNNEL,
        totals=totals,
        funnel=funnel_chart(daily),
        mau=mau_bar(stats["mau"]["anonymous"], stats["mau"]["registered"]),
    )
