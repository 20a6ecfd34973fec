"""A run's page (timeline, approvals, plan, costs, audit, lineage), its live-update probe and
the comparison of two runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from agent_engine.api.deps import Engine
from agent_engine.domain.principals import Role
from agent_engine.domain.states import TERMINAL_RUN_STATES, RunStatus
from agent_engine.engine import audit_checks, costs, plan_versions
from agent_engine.engine.comparison import compare_runs, divergence_report, jsonable
from agent_engine.engine.event_stream import StopAt, check_run, follow_run
from agent_engine.engine.lineage import family_tree
from agent_engine.engine.manifest import run_manifest
from agent_engine.engine.run_overview import run_story, waiting_reason
from agent_engine.engine.settle import plan_awaits_approval
from agent_engine.storage.runs import parse_run_id
from agent_engine.ui.diffs import side_by_side
from agent_engine.ui.render import PageRoute, render
from agent_engine.ui.run_view import REASON_TEXT, budget_bar, call_view, cost_chart, step_views
from agent_engine.ui.session import page_role

router = APIRouter(route_class=PageRoute)
MAX_PLAN_DIFFS = 20
LIVE_PING_S = 15


async def _plan_diffs(engine: Engine, run_id: str, versions: int) -> list[dict[str, Any]]:
    diffs = []
    first = max(1, versions - MAX_PLAN_DIFFS)
    for version in range(first, versions):
        diff = await plan_versions.diff_plans(engine, run_id, version, version + 1)
        diffs.append({**diff, "rows": side_by_side(diff["unified_diff"])})
    return diffs


def trace_url(template: str | None, trace_id: str | None) -> str | None:
    """The run's trace in the tracing UI (AGENT_ENGINE_TRACE_URL_TEMPLATE), or None."""
    if template is None or trace_id is None:
        return None
    return template.replace("{trace_id}", trace_id)


@router.get("/runs/{run_id}", response_class=HTMLResponse, **page_role(Role.VIEWER))
async def run_detail(request: Request, run_id: str, engine: Engine) -> HTMLResponse:
    """Everything about one run, with the forms that act on it."""
    parse_run_id(run_id)  # a malformed id is a 404 page before any work
    story = await run_story(engine, run_id)
    run = story.run
    summary = await costs.cost_summary(engine, run_id)
    family = await family_tree(engine, run_id)
    divergence = None
    if run.replay_of is not None or run.forked_from is not None:
        divergence = await divergence_report(engine, run_id)
    run_wait = None
    if run.status == RunStatus.AWAITING_APPROVAL and (
        run.budget_pause is not None or plan_awaits_approval(run)
    ):
        reason, detail = waiting_reason(run, None)
        run_wait = {"reason": reason, "text": REASON_TEXT[reason], "detail": detail}
    return render(
        request,
        "run.html",
        {
            "run": run,
            "steps": step_views(story),
            "planner_calls": [call_view(c) for c in story.calls.get(None, [])],
            "approvals": story.approvals,
            "plans": story.plans,
            "plan_diffs": await _plan_diffs(engine, run_id, len(story.plans)),
            "summary": summary,
            "budget": budget_bar(summary),
            "chart": cost_chart(summary),
            "family": family,
            "divergence": divergence,
            "run_wait": run_wait,
            "trace_url": trace_url(engine.settings.trace_url_template, run.trace_id),
            "live": RunStatus(run.status) not in TERMINAL_RUN_STATES,
            "finished": RunStatus(run.status) in (RunStatus.COMPLETED, RunStatus.FAILED),
        },
    )


async def _changes(stream: AsyncIterator[dict[str, Any]]) -> AsyncIterator[ServerSentEvent]:
    async for body in stream:
        data = json.dumps({"seq": body["seq"], "type": body["type"]})
        yield ServerSentEvent(data=data, event="changed", id=str(body["seq"]))


@router.get("/runs/{run_id}/live", response_model=None, **page_role(Role.VIEWER))
async def run_live(
    run_id: str, engine: Engine, after: Annotated[int, Query(ge=0)] = 0
) -> EventSourceResponse:
    """Server-Sent Events telling the run's page that the run moved on (one per audit event
    after seq ``after``, from the engine's event stream); the page reloads on the first."""
    run_uuid = await check_run(engine, run_id)
    stream = follow_run(engine, run_uuid, after, until=StopAt.FINISHED)
    return EventSourceResponse(_changes(stream), ping=LIVE_PING_S)


@router.get("/runs/{run_id}/audit", response_class=HTMLResponse, **page_role(Role.VIEWER))
async def audit_state(request: Request, run_id: str, engine: Engine) -> HTMLResponse:
    """The audit chain's verdict (verified, or broken at event N), fetched by the run's page
    after it is shown: verifying a long run takes longer than drawing it."""
    audit = await audit_checks.verify_run_chain(engine, run_id)
    # htmx asks for the fragment; a browser without script follows a link to a whole page.
    full_page = request.headers.get("HX-Request") != "true"
    context = {"audit": audit, "full_page": full_page, "run_id": run_id}
    return render(request, "audit_state.html", context)


@router.get("/runs/{run_id}/compare", response_class=HTMLResponse, **page_role(Role.VIEWER))
async def compare(
    request: Request,
    run_id: str,
    engine: Engine,
    other: Annotated[str, Query(min_length=1, max_length=100)],
) -> HTMLResponse:
    """Two runs step by step, and the first difference."""
    report = await compare_runs(engine, run_id, other.strip())
    return render(request, "compare.html", {"report": report, "run_id": run_id})


@router.get("/runs/{run_id}/manifest", response_class=HTMLResponse, **page_role(Role.VIEWER))
async def manifest(request: Request, run_id: str, engine: Engine) -> HTMLResponse:
    """The run's manifest (what it depended on), as ``GET …/manifest`` returns it."""
    document = jsonable(await run_manifest(engine, run_id))
    context = {
        "manifest": document,
        "manifest_hash": document.get("manifest_hash"),
        "run_id": run_id,
    }
    return render(request, "manifest.html", context)
