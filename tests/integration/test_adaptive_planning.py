"""Adaptive planning over HTTP with a scripted planner, on both backends: revisions after steps
that observe are new plan versions; completed steps never change; "continue", "done" and the
bounds (max_steps, max_replans, plan approval) do what docs/adaptive-planning.md says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    Usage,
)
from agent_engine.llm.prompts import detect_task
from agent_engine.llm.revision_prompts import RevisionPrompt, parse_revision_prompt
from tests.integration.test_workers import wait_for

CONTINUE = {"decision": "continue", "steps": [], "rationale": "the rest stands"}


class ScriptedPlanner:
    """Answers planning with ``plan`` and each revision with the next scripted answer (then
    "continue"); remembers every revision prompt it was shown. ``crashes``: how many revision
    requests die first (as a worker killed mid-revision); ``price``: what each call costs."""

    def __init__(
        self,
        revisions: list[dict[str, Any]],
        plan: dict[str, Any] | None = None,
        *,
        crashes: int = 0,
        price: Decimal | None = None,
    ) -> None:
        self.plan = plan or {"steps": [{"step_type": "noop", "input_data": {}}], "rationale": ""}
        self.revisions = list(revisions)
        self.asked: list[RevisionPrompt] = []
        self.crashes = crashes
        self.price = price

    def answer(self, request: CompletionRequest) -> Any:
        task = detect_task(request.messages)
        if task == "revise":
            if self.crashes:
                self.crashes -= 1
                raise RuntimeError("the planner's process died")
            self.asked.append(parse_revision_prompt(request.messages))
            return self.revisions.pop(0) if self.revisions else CONTINUE
        if task == "plan":
            return self.plan
        return {"text": "summary"}

    def client(self, budget: Decimal | None) -> LLMClient:
        return _Session(self)


class _Session(LLMClient):
    """One client as the engine's factory makes it: its own ledger of calls."""

    def __init__(self, script: ScriptedPlanner) -> None:
        self.script = script
        self._calls: list[LLMCallRecord] = []

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        text = json.dumps(self.script.answer(request))
        if self.script.price is not None:
            self._calls.append(
                LLMCallRecord(
                    provider="test",
                    model="scripted",
                    request={"messages": len(request.messages)},
                    request_hash="0" * 64,
                    response={"text": text},
                    usage=Usage(),
                    cost_usd=self.script.price,
                    latency_ms=0.0,
                )
            )
        return CompletionResponse(text=text, usage=Usage(), provider="test", model="scripted")

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        return Decimal(0)

    @property
    def calls(self) -> list[LLMCallRecord]:
        return list(self._calls)


@pytest.fixture
def workspace(workspace_root: Path) -> Path:
    target = workspace_root / "project"
    target.mkdir()
    (target / "notes.txt").write_text("observed\n")
    (target / "more.txt").write_text("more\n")
    return target


@asynccontextmanager
async def scripted_client(
    settings: Settings, planner: ScriptedPlanner
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, llm_factory=planner.client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


def read(path: str) -> dict[str, Any]:
    return {"step_type": "read_file", "input_data": {"path": path}}


def noop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"step_type": "noop", "input_data": {"value": value}, **extra}


def revise(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"decision": "revise", "steps": list(steps), "rationale": "what step 1 showed"}


async def create(http: httpx.AsyncClient, workspace: Path, **body: Any) -> dict[str, Any]:
    payload = {"goal": "g", "workspace": str(workspace), "planning": "adaptive", **body}
    response = await http.post("/v1/agent-runs", json=payload)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def execute(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await http.post(f"/v1/agent-runs/{run_id}/execute")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


async def events(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    body = (await http.get(f"/v1/agent-runs/{run_id}/audit")).json()
    found: list[dict[str, Any]] = body["events"]
    return found


def types_after(found: list[dict[str, Any]], first: Callable[[dict[str, Any]], bool]) -> list[str]:
    start = next(i for i, event in enumerate(found) if first(event))
    return [event["type"] for event in found[start:]]


async def test_a_revision_after_an_observing_step_is_a_new_plan_version_keeping_done_steps(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner(
        [revise(noop({"$ref": "steps.1.output.content"}, depends_on=[1]), noop("last"))]
    )
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt"), noop(2), noop(3)])
        after = await execute(http, run["id"])
        assert after["status"] == "planned" or after["status"] == "running"
        assert after["plan_version"] == 2
        assert after["adaptive"] == {"revisions": 1, "due_after": None, "closed": None}
        first = after["steps"][0]
        assert [(s["step_number"], s["status"]) for s in after["steps"]] == [
            (1, "completed"),
            (2, "cancelled"),
            (3, "cancelled"),
            (4, "pending"),
            (5, "pending"),
        ]
        assert after["steps"][3]["depends_on"] == [1] and after["steps"][4]["depends_on"] == [4]
        # The planner saw the goal, the plan so far and step 1's output.
        shown = planner.asked[0]
        assert shown.goal == "g" and shown.revision["after_step"] == 1
        assert shown.steps[0]["output"]["content"] == "observed\n"
        assert [s.get("replaceable", False) for s in shown.steps] == [False, True, True]

        done = after
        while done["status"] not in ("completed", "failed"):
            done = await execute(http, run["id"])
        assert done["status"] == "completed"
        assert done["steps"][3]["output_data"]["value"] == "observed\n"
        # The completed step is exactly as it was when the revision was made.
        kept = done["steps"][0]
        for name in ("output_data", "output_hash", "completed_at", "input_data", "attempt"):
            assert kept[name] == first[name]

        version = (await http.get(f"/v1/agent-runs/{run['id']}/plan?version=2")).json()
        assert version["source"] == "revision" and version["rationale"] == "what step 1 showed"
        assert version["document"]["revision"] == {
            "after_step": 1,
            "replaced": [2, 3],
            "added": [4, 5],
        }
        original = (await http.get(f"/v1/agent-runs/{run['id']}/plan?version=1")).json()
        assert version["document"]["steps"][0] == original["document"]["steps"][0]
        diff = (
            await http.get(f"/v1/agent-runs/{run['id']}/plan/diff", params={"from": 1, "to": 2})
        ).json()
        assert not diff["identical"]
        assert [(c["step_number"], c["change"]) for c in diff["steps"]] == [
            (2, "changed"),
            (3, "changed"),
            (4, "added"),
            (5, "added"),
        ]
        assert diff["steps"][0]["fields"] == {"superseded": {"from": None, "to": True}}

        found = await events(http, run["id"])
        sequence = types_after(found, lambda e: e["type"] == "step.completed")
        assert sequence[:6] == [
            "step.completed",
            "run.planning",
            "step.cancelled",
            "step.cancelled",
            "plan.revised",
            "run.running",
        ]
        revised = next(e for e in found if e["type"] == "plan.revised")
        assert revised["payload"]["plan_hash"] == version["plan_hash"]
        assert revised["payload"]["replaced"] == [2, 3]


async def test_continue_keeps_the_plan_and_records_the_rationale(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner([CONTINUE])
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt"), noop(2)])
        after = await execute(http, run["id"])
        assert after["plan_version"] == 1 and after["status"] == "running"
        assert [s["status"] for s in after["steps"]] == ["completed", "pending"]
        done = await execute(http, run["id"])
        assert done["status"] == "completed"
        kept = [e for e in await events(http, run["id"]) if e["type"] == "plan.kept"]
        assert [e["payload"]["rationale"] for e in kept] == ["the rest stands"]
        assert len(planner.asked) == 1  # noop does not observe: asked once only


async def test_done_skips_the_steps_not_started_and_completes_the_run(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner([{"decision": "done", "steps": [], "rationale": "seen enough"}])
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt"), noop(2), noop(3)])
        done = await execute(http, run["id"])
        assert done["status"] == "completed"
        assert [s["status"] for s in done["steps"]] == ["completed", "skipped", "skipped"]
        assert done["adaptive"]["closed"] == "goal_met"
        met = [e for e in await events(http, run["id"]) if e["type"] == "plan.goal_met"]
        assert met[0]["payload"]["rationale"] == "seen enough"
        assert met[0]["payload"]["skipped"] == [2, 3]


async def test_a_revision_over_max_steps_is_refused_and_told_then_the_run_fails(
    settings: Settings, workspace: Path
) -> None:
    too_many = revise(noop("a"), noop("b"))
    planner = ScriptedPlanner([too_many, too_many, too_many])
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt"), noop(2)], max_steps=3)
        failed = await execute(http, run["id"])
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "max_steps"
        assert "max_steps 3" in failed["error"]["message"]
        assert [s["status"] for s in failed["steps"]] == ["completed", "pending"]
        assert failed["plan_version"] == 1
        assert len(planner.asked) == 3
        assert planner.asked[0].previous_errors == []
        assert "at most 1 new steps fit" in planner.asked[1].previous_errors[0]
        # Resumed by a person, the current plan runs on without asking again.
        resumed = await http.post(f"/v1/agent-runs/{run['id']}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] == "running"
        done = await execute(http, run["id"])
        assert done["status"] == "completed" and len(planner.asked) == 3


async def test_a_refused_revision_may_be_answered_again_within_max_steps(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner([revise(noop("a"), noop("b")), revise(noop("fits"))])
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt"), noop(2)], max_steps=3)
        after = await execute(http, run["id"])
        assert after["plan_version"] == 2
        assert [s["status"] for s in after["steps"]] == ["completed", "cancelled", "pending"]


async def test_a_revision_that_depends_on_a_replaced_step_is_refused_and_told(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner([revise(noop("x", depends_on=[2])), CONTINUE])
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt"), noop(2)])
        after = await execute(http, run["id"])
        assert after["plan_version"] == 1 and after["status"] == "running"
        assert "step 2 is replaced by this revision" in planner.asked[1].previous_errors[0]


async def test_a_first_plan_over_max_steps_is_refused_and_the_run_fails_planning(
    settings: Settings, workspace: Path
) -> None:
    plan = {"steps": [noop(1), noop(2), noop(3)], "rationale": "too long"}
    planner = ScriptedPlanner([], plan=plan)
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, max_steps=2)
        failed = await execute(http, run["id"])
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "planning_failed"
        assert "max_steps is 2" in failed["error"]["message"]


async def test_reaching_max_replans_stops_asking_and_the_plan_runs_to_its_end(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner([revise(read("more.txt"), noop("end"))])
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt"), noop(2)], max_replans=1)
        done = await execute(http, run["id"])
        while done["status"] not in ("completed", "failed"):
            done = await execute(http, run["id"])
        assert done["status"] == "completed"
        assert len(planner.asked) == 1  # the read of more.txt observed, but no more revisions
        assert done["adaptive"] == {"revisions": 1, "due_after": None, "closed": "max_replans"}
        found = [e["type"] for e in await events(http, run["id"])]
        assert found.index("plan.revisions_exhausted") == found.index("plan.revised") + 1


async def test_max_replans_zero_never_asks(settings: Settings, workspace: Path) -> None:
    planner = ScriptedPlanner([revise(noop("never"))])
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt")], max_replans=0)
        done = await execute(http, run["id"])
        assert done["status"] == "completed" and planner.asked == []


async def test_with_plan_approval_a_revision_waits_for_its_approval(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner([revise(noop("new"))])
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt"), noop(2)], plan_approval=True)
        plan_url = f"/v1/agent-runs/{run['id']}/plan"
        assert (await http.post(f"{plan_url}/approve")).status_code == 200
        waiting = await execute(http, run["id"])
        assert waiting["status"] == "awaiting_approval" and waiting["plan_version"] == 2
        refused = await http.post(f"/v1/agent-runs/{run['id']}/execute")
        assert refused.status_code == 409 and "waiting for approval" in refused.json()["detail"]
        approved = await http.post(f"{plan_url}/approve", json={"comment": "fine"})
        assert approved.status_code == 200 and approved.json()["status"] == "planned"
        done = await execute(http, run["id"])
        assert done["status"] == "completed"
        assert done["steps"][2]["output_data"]["value"] == "new"


async def test_a_goal_only_adaptive_run_is_planned_then_revised_by_a_worker(
    settings: Settings, workspace: Path
) -> None:
    first = {"steps": [read("notes.txt")], "rationale": "look first"}
    planner = ScriptedPlanner([revise(noop({"$ref": "steps.1.output.content"}))], plan=first)
    worker_settings = settings.model_copy(update={"embedded_worker": True, "worker_poll_s": 0.2})
    app = create_app(worker_settings, llm_factory=planner.client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        body = {"goal": "g", "workspace": str(workspace), "planning": "adaptive"}
        run = (await http.post("/v1/agent-runs", json={**body, "auto_start": True})).json()
        done = await wait_for(http, run["id"], {"completed", "failed"})
        assert done["status"] == "completed", done
        assert done["plan_version"] == 2
        assert [s["step_type"] for s in done["steps"]] == ["read_file", "noop"]
        assert done["steps"][1]["output_data"]["value"] == "observed\n"


async def test_a_revision_left_by_a_dead_worker_is_made_by_the_next_one(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner([revise(noop("after the crash"))], crashes=1)
    worker_settings = settings.model_copy(
        update={"embedded_worker": True, "worker_poll_s": 0.2, "worker_lease_s": 1.0}
    )
    app = create_app(worker_settings, llm_factory=planner.client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        run = await create(http, workspace, steps=[read("notes.txt")], auto_start=True)
        done = await wait_for(http, run["id"], {"completed", "failed"})
        assert done["status"] == "completed", done
        assert planner.crashes == 0 and len(planner.asked) == 1
        assert [s["output_data"]["value"] for s in done["steps"][1:]] == ["after the crash"]


async def test_by_hand_a_revision_left_due_is_made_by_the_next_execute(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner([revise(noop("made later"))], crashes=1)
    async with scripted_client(settings, planner) as http:
        run = await create(http, workspace, steps=[read("notes.txt"), noop(2)])
        with pytest.raises(RuntimeError, match="died"):
            await http.post(f"/v1/agent-runs/{run['id']}/execute")
        left = (await http.get(f"/v1/agent-runs/{run['id']}")).json()
        assert left["status"] == "planning" and left["adaptive"]["due_after"] == 1
        after = await execute(http, run["id"])  # revises first, then runs the new step
        assert after["plan_version"] == 2
        assert [(s["step_number"], s["status"]) for s in after["steps"]] == [
            (1, "completed"),
            (2, "cancelled"),
            (3, "completed"),
        ]
        assert after["status"] == "completed"


async def test_the_planners_calls_count_against_the_budget_which_ends_the_loop(
    settings: Settings, workspace: Path
) -> None:
    planner = ScriptedPlanner([CONTINUE], price=Decimal("0.01"))
    async with scripted_client(settings, planner) as http:
        steps = [read("notes.txt"), read("more.txt"), noop(3)]
        run = await create(http, workspace, steps=steps, budget_usd="0.01")
        done = await execute(http, run["id"])
        while done["status"] not in ("completed", "failed"):
            done = await execute(http, run["id"])
        assert done["status"] == "completed"
        assert len(planner.asked) == 1  # after step 2 the budget was spent: not asked
        assert done["total_cost_usd"] == 0.01
        assert done["adaptive"]["closed"] == "budget"
        stopped = [
            e for e in await events(http, run["id"]) if e["type"] == "plan.revisions_stopped"
        ]
        assert stopped[0]["payload"]["reason"] == "budget"
        assert stopped[0]["payload"]["after_step"] == 2


async def test_a_fixed_plan_run_is_never_revised(settings: Settings, workspace: Path) -> None:
    planner = ScriptedPlanner([revise(noop("never"))])
    async with scripted_client(settings, planner) as http:
        body = {"goal": "g", "workspace": str(workspace), "steps": [read("notes.txt")]}
        run = (await http.post("/v1/agent-runs", json=body)).json()
        assert "planning" not in run["options"] and run["adaptive"] is None
        done = await execute(http, run["id"])
        assert done["status"] == "completed" and planner.asked == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"planning": "sometimes"}, "planning"),
        ({"max_steps": 5}, "max_steps"),
        ({"max_replans": 1}, "max_replans"),
        ({"planning": "adaptive", "max_steps": 0}, "max_steps"),
        ({"planning": "adaptive", "max_steps": 501}, "max_steps"),
        ({"planning": "adaptive", "max_replans": -1}, "max_replans"),
        ({"planning": "adaptive", "max_replans": 21}, "max_replans"),
        ({"planning": "adaptive", "max_steps": 1, "steps": [noop(1), noop(2)]}, "steps"),
    ],
)
async def test_nonsense_planning_options_are_refused_with_a_422(
    client: httpx.AsyncClient, extra: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/agent-runs", json={"goal": "g", **extra})
    assert response.status_code == 422, response.text
    assert field in json.dumps(response.json())
    assert (await client.get("/v1/agent-runs")).json()["items"] == []


async def test_adaptive_bounds_are_recorded_in_the_run_options(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agent-runs", json={"goal": "g", "planning": "adaptive"})
    assert response.status_code == 201
    options = response.json()["options"]
    assert (options["planning"], options["max_steps"], options["max_replans"]) == (
        "adaptive",
        50,
        5,
    )
