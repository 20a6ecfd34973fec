"""The console's forms that change a run: approve, reject, cancel, start, resume, raise the
budget, replay and fork. Each is a POST checked against CSRF, with the same role and the same
engine service as its API route; it answers with a redirect to the run's page."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ValidationError

from agent_engine.api.deps import Engine
from agent_engine.domain.principals import Principal, Role
from agent_engine.engine import control, plan_versions, runs
from agent_engine.engine.approvals import decide_step
from agent_engine.engine.budget_changes import BudgetChange, change_run_budget
from agent_engine.engine.forks import ForkRequest, fork_run
from agent_engine.engine.replay import ReplayRequest, replay_run
from agent_engine.errors import InputValidationError
from agent_engine.ui.render import PageRoute
from agent_engine.ui.session import CSRF_FIELD, check_csrf, page_role

router = APIRouter(route_class=PageRoute)
Model = TypeVar("Model", bound=BaseModel)
Token = Annotated[str, Form(alias=CSRF_FIELD, max_length=200)]
Comment = Annotated[str, Form(max_length=10_000)]


def validated(model: type[Model], data: dict[str, Any]) -> Model:
    """``model`` made from form fields; its errors become a 422 naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "form", "message": e["msg"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InputValidationError(detail, errors=errors) from exc


def acting(request: Request, token: str) -> Principal:
    """The user the page's role check found, once the form's token is checked."""
    check_csrf(request, token)
    principal: Principal = request.state.principal
    return principal


def back_to(run_id: object) -> RedirectResponse:
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


@router.post("/runs/{run_id}/steps/{step_id}/approve", **page_role(Role.APPROVER))
async def approve_step(
    request: Request, run_id: str, step_id: str, engine: Engine, token: Token, comment: Comment = ""
) -> RedirectResponse:
    """Approve a waiting step (the comment is recorded with what was shown)."""
    who = acting(request, token)
    await decide_step(
        engine,
        run_id,
        step_id,
        decision="approved",
        actor=who.name,
        comment=comment.strip() or None,
    )
    return back_to(run_id)


def _reason(comment: str) -> str:
    if not comment.strip():
        raise InputValidationError(
            "say why in the comment: a rejection needs a reason",
            errors=[{"field": "comment", "message": "required to reject"}],
        )
    return comment.strip()


@router.post("/runs/{run_id}/steps/{step_id}/reject", **page_role(Role.APPROVER))
async def reject_step(
    request: Request, run_id: str, step_id: str, engine: Engine, token: Token, comment: Comment = ""
) -> RedirectResponse:
    """Reject a waiting step; the reason is required."""
    who = acting(request, token)
    await decide_step(
        engine, run_id, step_id, decision="rejected", actor=who.name, comment=_reason(comment)
    )
    return back_to(run_id)


@router.post("/runs/{run_id}/plan/approve", **page_role(Role.APPROVER))
async def approve_plan(
    request: Request, run_id: str, engine: Engine, token: Token, comment: Comment = ""
) -> RedirectResponse:
    """Approve the plan the run waits on."""
    who = acting(request, token)
    await plan_versions.decide_plan(
        engine, run_id, decision="approved", actor=who.name, comment=comment.strip() or None
    )
    return back_to(run_id)


@router.post("/runs/{run_id}/plan/reject", **page_role(Role.APPROVER))
async def reject_plan(
    request: Request, run_id: str, engine: Engine, token: Token, comment: Comment = ""
) -> RedirectResponse:
    """Reject the plan the run waits on (the run fails); the reason is required."""
    who = acting(request, token)
    await plan_versions.decide_plan(
        engine, run_id, decision="rejected", actor=who.name, comment=_reason(comment)
    )
    return back_to(run_id)


@router.post("/runs/{run_id}/cancel", **page_role(Role.OPERATOR))
async def cancel_run(
    request: Request, run_id: str, engine: Engine, token: Token, comment: Comment = ""
) -> RedirectResponse:
    """Cancel the run and its unfinished steps."""
    who = acting(request, token)
    await runs.cancel_run(engine, run_id, actor=who.name, reason=comment.strip() or None)
    return back_to(run_id)


@router.post("/runs/{run_id}/start", **page_role(Role.OPERATOR))
async def start_run(
    request: Request, run_id: str, engine: Engine, token: Token
) -> RedirectResponse:
    """Hand the run to the workers."""
    who = acting(request, token)
    await control.start_run(engine, run_id, actor=who.name)
    return back_to(run_id)


@router.post("/runs/{run_id}/resume", **page_role(Role.OPERATOR))
async def resume_run(
    request: Request, run_id: str, engine: Engine, token: Token
) -> RedirectResponse:
    """Resume a failed run from its first unfinished step."""
    who = acting(request, token)
    await control.resume_run(engine, run_id, actor=who.name)
    return back_to(run_id)


@router.post("/runs/{run_id}/budget", **page_role(Role.OPERATOR))
async def raise_budget(
    request: Request,
    run_id: str,
    engine: Engine,
    token: Token,
    budget_usd: Annotated[str, Form(max_length=40)] = "",
    budget_tokens: Annotated[str, Form(max_length=40)] = "",
    comment: Comment = "",
) -> RedirectResponse:
    """Change the run's budget (steps paused for it go on); the reason is required. A limit
    left empty is left as it is."""
    who = acting(request, token)
    data: dict[str, Any] = {"reason": comment.strip()}
    for name, value in (("budget_usd", budget_usd), ("budget_tokens", budget_tokens)):
        if value.strip():
            data[name] = value.strip()
    change = validated(BudgetChange, data)
    await change_run_budget(engine, run_id, change, actor=who.name)
    return back_to(run_id)


@router.post("/runs/{run_id}/replay", **page_role(Role.OPERATOR))
async def replay(
    request: Request,
    run_id: str,
    engine: Engine,
    token: Token,
    mode: Annotated[str, Form(max_length=20)] = "hermetic",
) -> RedirectResponse:
    """Replay a finished run from its records; the new run's page opens."""
    who = acting(request, token)
    replay_request = validated(ReplayRequest, {"mode": mode})
    view = await replay_run(engine, run_id, replay_request.mode, actor=who.name)
    return back_to(view.run.id)


@router.post("/runs/{run_id}/fork", **page_role(Role.OPERATOR))
async def fork(
    request: Request,
    run_id: str,
    engine: Engine,
    token: Token,
    from_step: Annotated[str, Form(max_length=10)],
    input_data: Annotated[str, Form(max_length=200_000)] = "",
    replay_records: Annotated[str, Form(max_length=10)] = "",
) -> RedirectResponse:
    """Fork the run from a step (optionally with a new input for it); the fork's page opens."""
    who = acting(request, token)
    data: dict[str, Any] = {"from_step": from_step, "replay": bool(replay_records)}
    if input_data.strip():
        try:
            data["input_data"] = json.loads(input_data)
        except json.JSONDecodeError as exc:
            raise InputValidationError(
                f"input_data is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                errors=[{"field": "input_data", "message": exc.msg}],
            ) from exc
    fork_request = validated(ForkRequest, data)
    view = await fork_run(
        engine, run_id, fork_request, actor=who.name, may_loosen_policy=who.may_auto_approve
    )
    return back_to(view.run.id)
