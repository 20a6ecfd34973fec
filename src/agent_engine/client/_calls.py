"""What each client method sends and how its answer is read, shared by the sync and the async
client (which only differ in how they send)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from agent_engine.client.errors import error_from_problem
from agent_engine.client.models import (
    AuditOut,
    ExecuteOut,
    Health,
    PlanOut,
    RunBudget,
    RunEvent,
    RunPage,
    RunWithSteps,
    StepOut,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
DEFAULT_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "AGENT_ENGINE_URL"
KEY_VARIABLE = "AGENT_ENGINE_API_KEY"
RUNS = "/v1/agent-runs"


class Unset:
    """The default of an optional field that ``None`` would change (``None`` removes a limit)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reader of its successful answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def base_url_of(base_url: str | None) -> str:
    """The server's URL: as given, else ``AGENT_ENGINE_URL``, else the local default."""
    return (base_url or os.environ.get(URL_VARIABLE) or DEFAULT_URL).rstrip("/")


def headers_of(api_key: str | None, actor: str | None) -> dict[str, str]:
    """Authorization (the key as given, else ``AGENT_ENGINE_API_KEY``) and ``X-Actor``."""
    key = api_key if api_key is not None else os.environ.get(KEY_VARIABLE)
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if actor:
        headers["X-Actor"] = actor
    return headers


def check(response: httpx.Response) -> None:
    """Raise the typed exception for an error answer (problem+json or not)."""
    if response.is_success:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    raise error_from_problem(response.status_code, body, response.headers.get("Retry-After"))


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate(response.json())


def _json(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return body


_STEPS = TypeAdapter(list[StepOut])
_EVENT = TypeAdapter(RunEvent)


def parse_event(data: str) -> RunEvent:
    """One SSE ``data`` field as a :class:`RunEvent`."""
    return _EVENT.validate_json(data)


def _money(value: Decimal | str | float | int | None) -> str | None:
    # As a string: JSON numbers would pass through binary floating point.
    return None if value is None else format(Decimal(str(value)), "f")


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def create_run(
    goal: str, *, idempotency_key: str | None, fields: dict[str, Any]
) -> Call[RunWithSteps]:
    """``POST /v1/agent-runs``."""
    body = _without_none({"goal": goal, **{k: _dump(v) for k, v in fields.items()}})
    if "budget_usd" in body:
        body["budget_usd"] = _money(body["budget_usd"])
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Call("POST", RUNS, _model(RunWithSteps), body=body, headers=headers)


def get_run(run_id: str) -> Call[RunWithSteps]:
    """``GET /v1/agent-runs/{id}``."""
    return Call("GET", f"{RUNS}/{run_id}", _model(RunWithSteps))


def list_runs(
    status: str | list[str] | None,
    limit: int,
    cursor: str | None,
    forked_from: str | None,
    replay_of: str | None,
) -> Call[RunPage]:
    """``GET /v1/agent-runs`` (one page)."""
    statuses = [status] if isinstance(status, str) else list(status or [])
    params = _without_none(
        {"limit": limit, "cursor": cursor, "forked_from": forked_from, "replay_of": replay_of}
    )
    if statuses:
        params["status"] = statuses
    return Call("GET", RUNS, _model(RunPage), params=params)


def steps(run_id: str) -> Call[list[StepOut]]:
    """``GET /v1/agent-runs/{id}/steps``."""
    return Call("GET", f"{RUNS}/{run_id}/steps", lambda r: _STEPS.validate_python(r.json()))


def cost(run_id: str) -> Call[dict[str, Any]]:
    """``GET /v1/agent-runs/{id}/cost``."""
    return Call("GET", f"{RUNS}/{run_id}/cost", _json)


def approve(run_id: str, step_id: str, comment: str | None) -> Call[RunWithSteps]:
    """``POST …/steps/{step}/approve``."""
    body = {"comment": comment} if comment is not None else None
    return Call("POST", f"{RUNS}/{run_id}/steps/{step_id}/approve", _model(RunWithSteps), body=body)


def reject(run_id: str, step_id: str, reason: str) -> Call[RunWithSteps]:
    """``POST …/steps/{step}/reject``."""
    path = f"{RUNS}/{run_id}/steps/{step_id}/reject"
    return Call("POST", path, _model(RunWithSteps), body={"reason": reason})


def cancel(run_id: str, reason: str | None) -> Call[RunWithSteps]:
    """``POST …/cancel``."""
    body = {"reason": reason} if reason is not None else None
    return Call("POST", f"{RUNS}/{run_id}/cancel", _model(RunWithSteps), body=body)


def retry_step(run_id: str, step_id: str) -> Call[RunWithSteps]:
    """``POST …/steps/{step}/retry``."""
    return Call("POST", f"{RUNS}/{run_id}/steps/{step_id}/retry", _model(RunWithSteps))


def run_action(run_id: str, action: str) -> Call[RunWithSteps]:
    """``POST …/start`` or ``…/resume``."""
    return Call("POST", f"{RUNS}/{run_id}/{action}", _model(RunWithSteps))


def execute(run_id: str) -> Call[ExecuteOut]:
    """``POST …/execute``: one ready step, synchronously."""
    return Call("POST", f"{RUNS}/{run_id}/execute", _model(ExecuteOut))


def replay(run_id: str, mode: str) -> Call[RunWithSteps]:
    """``POST …/replay``."""
    return Call("POST", f"{RUNS}/{run_id}/replay", _model(RunWithSteps), body={"mode": mode})


def fork(run_id: str, from_step: int, overrides: dict[str, Any]) -> Call[RunWithSteps]:
    """``POST …/fork``."""
    body = {"from_step": from_step, **_without_none(overrides)}
    if body.get("replay") is False:
        del body["replay"]
    return Call("POST", f"{RUNS}/{run_id}/fork", _model(RunWithSteps), body=body)


def report(path: str) -> Call[dict[str, Any]]:
    """A GET whose answer is a JSON object (compare, divergence, family, verify, export)."""
    return Call("GET", path, _json)


def audit(run_id: str, after_seq: int, limit: int) -> Call[AuditOut]:
    """``GET …/audit``."""
    params = {"after_seq": after_seq, "limit": limit}
    return Call("GET", f"{RUNS}/{run_id}/audit", _model(AuditOut), params=params)


def import_run(bundle: dict[str, Any]) -> Call[dict[str, Any]]:
    """``POST /v1/agent-runs/import``."""
    return Call("POST", f"{RUNS}/import", _json, body=bundle)


def change_budget(
    run_id: str, reason: str, budget_usd: Any, budget_tokens: int | Unset | None
) -> Call[RunBudget]:
    """``PATCH …/budget``; a limit left UNSET is unchanged, ``None`` removes it."""
    body: dict[str, Any] = {"reason": reason}
    if not isinstance(budget_usd, Unset):
        body["budget_usd"] = _money(budget_usd)
    if not isinstance(budget_tokens, Unset):
        body["budget_tokens"] = budget_tokens
    return Call("PATCH", f"{RUNS}/{run_id}/budget", _model(RunBudget), body=body)


def plan(run_id: str, version: int | None) -> Call[PlanOut]:
    """``GET …/plan``."""
    params = {"version": version} if version is not None else None
    return Call("GET", f"{RUNS}/{run_id}/plan", _model(PlanOut), params=params)


def decide_plan(run_id: str, decision: str, text: str | None) -> Call[RunWithSteps]:
    """``POST …/plan/approve`` or ``…/plan/reject``."""
    body: dict[str, str | None] | None
    if decision == "approve":
        body = {"comment": text} if text is not None else None
    else:
        body = {"reason": text}
    return Call("POST", f"{RUNS}/{run_id}/plan/{decision}", _model(RunWithSteps), body=body)


def health() -> Call[Health]:
    """``GET /healthz``."""
    return Call("GET", "/healthz", _model(Health))


def events_request(
    run_id: str, until: str, after: int, type_prefix: str | None
) -> tuple[str, dict[str, Any]]:
    """The path and query of a run's event stream (resumed with ``Last-Event-ID``)."""
    params = _without_none({"until": until, "type": type_prefix})
    return f"{RUNS}/{run_id}/events", params


class SseDecoder:
    """Turns the lines of a ``text/event-stream`` into ``(id, data)`` pairs (pings and other
    comments are skipped)."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> tuple[str | None, str] | None:
        """One line; the event it completes, if it completes one."""
        if not line:
            if not self._data:
                return None
            event = (self._id, "\n".join(self._data))
            self._data, self._id = [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None
