"""The new-run form: goal, workspace, budget, policy, planning mode and an explicit plan,
with the engine's own validation errors shown beside the field they concern."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from agent_engine.api.deps import Engine, Gate
from agent_engine.domain.principals import Principal, Role
from agent_engine.engine import runs
from agent_engine.engine.policies import list_policies
from agent_engine.engine.run_overview import workspace_choices
from agent_engine.engine.run_requests import CreateRunRequest
from agent_engine.errors import EngineError, InputValidationError
from agent_engine.ui.actions import validated
from agent_engine.ui.render import PageRoute, render
from agent_engine.ui.session import CSRF_FIELD, check_csrf, page_role

router = APIRouter(route_class=PageRoute)

# The form's fields; an error about any part of the plan is shown beside the plan editor.
FIELDS = ("goal", "workspace", "budget_usd", "project", "policy", "planning", "steps")


def _field_of(name: str) -> str:
    head = name.split(".", 1)[0]
    return head if head in FIELDS else "form"


def _field_errors(error: EngineError) -> dict[str, list[str]]:
    """The refusal's errors by form field; a plan's (they name a step) go to the plan editor."""
    found: dict[str, list[str]] = {}
    for item in error.data.get("errors") or []:
        where = str(item.get("field", ""))
        message = str(item.get("message", error.detail))
        if item.get("step_number") is not None:
            field, text = "steps", f"step {item['step_number']}: {where or 'input_data'}: {message}"
        else:
            field = _field_of(where)
            text = f"{where}: {message}" if field == "steps" and where != "steps" else message
        found.setdefault(field, []).append(text)
    if not found:
        found["form"] = [error.detail]
    return found


async def _form_page(
    request: Request,
    engine: Engine,
    values: dict[str, Any],
    errors: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "new_run.html",
        {
            "values": values,
            "errors": errors or {},
            "workspaces": await workspace_choices(engine),
            "policies": list_policies(engine.policies),
        },
        status_code=status_code,
    )


@router.get("/runs/new", response_class=HTMLResponse, **page_role(Role.OPERATOR))
async def new_run_form(request: Request, engine: Engine) -> HTMLResponse:
    """The empty form."""
    return await _form_page(
        request, engine, {"policy": "default", "planning": "fixed", "auto_start": True}
    )


def _plan_steps(text: str) -> Any:
    """The plan editor's JSON: a list of steps, or an object with ``steps``."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputValidationError(
            "the plan is not JSON",
            errors=[
                {
                    "field": "steps",
                    "message": f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                }
            ],
        ) from exc
    if isinstance(document, dict) and "steps" in document:
        return document["steps"]
    return document


@router.post("/runs/new", response_model=None, **page_role(Role.OPERATOR))
async def create_run(
    request: Request,
    engine: Engine,
    guard: Gate,
    token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)],
    goal: Annotated[str, Form(max_length=20_000)] = "",
    workspace: Annotated[str, Form(max_length=4096)] = "",
    budget_usd: Annotated[str, Form(max_length=40)] = "",
    project: Annotated[str, Form(max_length=200)] = "",
    policy: Annotated[str, Form(max_length=200)] = "default",
    planning: Annotated[str, Form(max_length=20)] = "fixed",
    plan: Annotated[str, Form(max_length=1_000_000)] = "",
    plan_approval: Annotated[str, Form(max_length=10)] = "",
    auto_start: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Create the run through the engine (as ``POST /v1/agent-runs`` does) and open its page;
    on a refusal the form comes back filled in, each error beside its field (422)."""
    check_csrf(request, token)
    principal: Principal = request.state.principal
    values: dict[str, Any] = {
        "goal": goal,
        "workspace": workspace,
        "budget_usd": budget_usd,
        "project": project,
        "policy": policy,
        "planning": planning,
        "plan": plan,
        "plan_approval": bool(plan_approval),
        "auto_start": bool(auto_start),
    }
    body: dict[str, Any] = {
        "goal": goal.strip(),
        "policy": policy,
        "planning": planning,
        "plan_approval": bool(plan_approval),
        "auto_start": bool(auto_start),
    }
    for name, value in (("workspace", workspace), ("budget_usd", budget_usd), ("project", project)):
        if value.strip():
            body[name] = value.strip()
    try:
        if plan.strip():
            body["steps"] = _plan_steps(plan)
        request_body = validated(CreateRunRequest, body)
        async with guard.admission.admit(principal.name):
            view = await runs.create_run(
                engine,
                request_body,
                actor=principal.name,
                idempotency_key=None,
                may_loosen_policy=principal.may_auto_approve,
                api_key_id=principal.key_id,
            )
    except EngineError as exc:
        if exc.http_status >= 500 or exc.http_status in (401, 429):
            raise
        return await _form_page(request, engine, values, _field_errors(exc), exc.http_status)
    return RedirectResponse(f"/runs/{view.run.id}", status_code=303)
