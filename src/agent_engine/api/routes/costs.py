"""``/v1/costs``: what the ledger adds up to across runs, by day, model, step type, project and
key, as JSON or CSV."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from agent_engine.api.access import requires
from agent_engine.api.deps import Engine
from agent_engine.domain.principals import Role
from agent_engine.engine import cost_reports

router = APIRouter(prefix="/v1/costs", tags=["costs"])

_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "The totals, JSON or CSV"}
}


@router.get("", **requires(Role.VIEWER, responses=_CSV))
async def get_costs(
    engine: Engine,
    group_by: Annotated[
        list[str],
        Query(
            description="Group by day (UTC), model, step_type, project or key; repeat it or "
            "separate by commas to group by several. None: one row of totals.",
        ),
    ] = [],  # noqa: B006  # FastAPI's documented way to declare a list query parameter
    since: Annotated[date | None, Query(description="First UTC day included")] = None,
    until: Annotated[date | None, Query(description="Last UTC day included")] = None,
    project: Annotated[str | None, Query(max_length=200)] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    """Calls, tokens, cost and what the cache and the budget saver saved, per group."""
    query = cost_reports.cost_query(group_by, since, until, project)
    report = await cost_reports.cost_report(engine, query)
    if format == "csv":
        return PlainTextResponse(cost_reports.report_csv(report), media_type="text/csv")
    return _numbers(report)


def _numbers(value: Any) -> Any:
    """Money as JSON numbers, as the run's cost summary gives it."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value
