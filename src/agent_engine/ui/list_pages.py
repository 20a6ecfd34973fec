"""The console's lists: runs (filtered, searched, live) and the approvals inbox."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from agent_engine.api.deps import Engine
from agent_engine.domain.principals import Role
from agent_engine.domain.states import RunStatus
from agent_engine.engine.run_overview import runs_page, waiting_for_people
from agent_engine.errors import InputValidationError
from agent_engine.ui.render import PageRoute, render
from agent_engine.ui.run_view import REASON_TEXT
from agent_engine.ui.session import page_role

router = APIRouter(route_class=PageRoute)
PAGE_SIZE = 50


@router.get("/", **page_role(Role.VIEWER))
async def home() -> RedirectResponse:
    """The console starts at the runs list."""
    return RedirectResponse("/runs", status_code=303)


def _status(raw: str) -> list[RunStatus]:
    if not raw:
        return []
    try:
        return [RunStatus(raw)]
    except ValueError:
        raise InputValidationError(f"unknown status {raw!r}") from None


@router.get("/runs", response_class=HTMLResponse, **page_role(Role.VIEWER))
async def runs_list(
    request: Request,
    engine: Engine,
    status: Annotated[str, Query(max_length=40)] = "",
    project: Annotated[str, Query(max_length=200)] = "",
    q: Annotated[str, Query(max_length=500)] = "",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> HTMLResponse:
    """Runs newest first with their families; the rows refresh themselves while open."""
    page = await runs_page(
        engine,
        statuses=_status(status),
        project=project.strip() or None,
        search=q.strip() or None,
        cursor=cursor,
        limit=PAGE_SIZE,
    )
    filtered = bool(status or project or q or cursor)
    return render(
        request,
        "runs.html",
        {
            "page": page,
            "statuses": [s.value for s in RunStatus],
            "filters": {"status": status, "project": project, "q": q},
            "filtered": filtered,
        },
    )


@router.get("/approvals", response_class=HTMLResponse, **page_role(Role.VIEWER))
async def approvals_inbox(request: Request, engine: Engine) -> HTMLResponse:
    """Every step and plan waiting for a person, across runs, the longest waiting first."""
    items = await waiting_for_people(engine)
    return render(request, "approvals.html", {"items": items, "reasons": REASON_TEXT})
