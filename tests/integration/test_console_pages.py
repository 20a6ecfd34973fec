"""The console's pages over ASGI: what each page shows, the forms going through the engine,
and the refusals (CSRF, roles, login) with authentication on and off."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from agent_engine.storage.tables import Base
from agent_engine.ui.session import CSRF_COOKIE, KEY_COOKIE
from tests.audit_runs import covered_run, drop_append_only, raw_database
from tests.backends import one_backend
from tests.keys import authed_app

pytestmark = one_backend(
    "sqlite",
    "the pages render what engine services return; those services' storage is tested on "
    "both backends",
)

ORIGIN = {"Origin": "http://testserver"}
AUTHED_ORIGIN = {"Origin": "http://t"}  # tests.keys.authed_app's base URL


async def form_token(http: httpx.AsyncClient, path: str = "/runs") -> str:
    """The form token a page carries (the browser's CSRF cookie is set by the same answer)."""
    page = await http.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def edit_plan() -> list[dict[str, Any]]:
    return [
        {"step_type": "read_file", "input_data": {"path": "notes.txt"}},
        {
            "step_type": "edit_file",
            "input_data": {
                "path": "notes.txt",
                "operation": "replace",
                "old": "world",
                "new": "there",
            },
        },
    ]


@pytest.fixture
def project(workspace_root: Path) -> Path:
    folder = workspace_root / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\nworld\n")
    return folder


async def create_through_form(
    http: httpx.AsyncClient, project: Path, **fields: str
) -> httpx.Response:
    token = await form_token(http, "/runs/new")
    data = {
        "csrf_token": token,
        "goal": "Change world to there",
        "workspace": str(project),
        "plan": json.dumps(edit_plan()),
        **fields,
    }
    return await http.post("/runs/new", data=data, headers=ORIGIN)


async def paused_run(http: httpx.AsyncClient, project: Path) -> tuple[str, str]:
    """A run made through the form and stepped until its edit waits: (run id, step id)."""
    created = await create_through_form(http, project)
    assert created.status_code == 303, created.text
    run_id = created.headers["location"].rsplit("/", 1)[1]
    for _ in range(2):
        stepped = await http.post(f"/v1/agent-runs/{run_id}/execute")
        assert stepped.status_code == 200, stepped.text
    steps = (await http.get(f"/v1/agent-runs/{run_id}")).json()["steps"]
    assert steps[1]["status"] == "awaiting_approval"
    return run_id, steps[1]["id"]


async def test_the_runs_list_of_an_empty_server_says_how_to_start(
    client: httpx.AsyncClient,
) -> None:
    home = await client.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/runs"
    page = await client.get("/runs")
    assert page.status_code == 200
    assert "No runs yet" in page.text and 'href="/runs/new"' in page.text
    inbox = await client.get("/approvals")
    assert "Nothing waits for approval" in inbox.text


async def test_a_run_made_through_the_form_shows_its_diff_and_is_approved_from_its_page(
    client: httpx.AsyncClient, project: Path
) -> None:
    run_id, step_id = await paused_run(client, project)
    page = (await client.get(f"/runs/{run_id}")).text
    assert "Waiting for you" in page
    # Side by side, the changed words marked.
    assert '<td class="code removed"><mark>world</mark></td>' in page
    assert '<td class="code added"><mark>there</mark></td>' in page
    assert f'action="/runs/{run_id}/steps/{step_id}/approve"' in page
    assert f'hx-get="/runs/{run_id}/audit"' in page  # verified after the page is shown
    audit = await client.get(f"/runs/{run_id}/audit", headers={"HX-Request": "true"})
    assert '<p class="ok" id="audit-state">Verified: ' in audit.text
    assert "<html" not in audit.text  # a fragment for htmx, a whole page otherwise
    inbox = (await client.get("/approvals")).text
    assert f"/runs/{run_id}#step-2" in inbox and "policy rule" in inbox
    token = await form_token(client, f"/runs/{run_id}")
    approved = await client.post(
        f"/runs/{run_id}/steps/{step_id}/approve",
        data={"csrf_token": token, "comment": "looks right"},
        headers=ORIGIN,
    )
    assert approved.status_code == 303 and approved.headers["location"] == f"/runs/{run_id}"
    run = (await client.get(f"/v1/agent-runs/{run_id}")).json()
    assert run["steps"][1]["status"] == "approved"
    approvals = (await client.get(f"/v1/agent-runs/{run_id}/audit")).json()["events"]
    decided = [e for e in approvals if e["payload"].get("comment") == "looks right"]
    assert decided, "the comment is in the audit chain"
    assert "Nothing waits for approval" in (await client.get("/approvals")).text


async def test_a_rejection_without_a_reason_is_refused_on_the_page(
    client: httpx.AsyncClient, project: Path
) -> None:
    run_id, step_id = await paused_run(client, project)
    token = await form_token(client, f"/runs/{run_id}")
    refused = await client.post(
        f"/runs/{run_id}/steps/{step_id}/reject", data={"csrf_token": token}, headers=ORIGIN
    )
    assert refused.status_code == 422
    assert "a rejection needs a reason" in refused.text
    assert refused.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        pytest.param("forged", ORIGIN, id="wrong token"),
        pytest.param(None, ORIGIN, id="no token"),
        pytest.param("cookie", {"Origin": "http://evil.example"}, id="other origin"),
        pytest.param("cookie", {"Origin": "null"}, id="opaque origin"),
    ],
)
async def test_a_form_that_fails_the_csrf_check_changes_nothing(
    client: httpx.AsyncClient,
    project: Path,
    token: str | None,
    headers: dict[str, str],
) -> None:
    run_id, step_id = await paused_run(client, project)
    real = await form_token(client, f"/runs/{run_id}")
    data = {} if token is None else {"csrf_token": real if token == "cookie" else token}
    refused = await client.post(
        f"/runs/{run_id}/steps/{step_id}/approve", data=data, headers=headers
    )
    assert refused.status_code in (403, 422), refused.text
    if token is not None:
        assert refused.status_code == 403 and "csrf_refused" in refused.text
    run = (await client.get(f"/v1/agent-runs/{run_id}")).json()
    assert run["steps"][1]["status"] == "awaiting_approval"


async def test_plan_errors_are_shown_beside_the_plan_editor_with_the_form_kept(
    client: httpx.AsyncClient, project: Path
) -> None:
    bad = [{"step_type": "read_file", "input_data": {}}, {"step_type": "teleport"}]
    answer = await create_through_form(client, project, plan=json.dumps(bad))
    assert answer.status_code == 422
    editor = answer.text.split('id="plan"', 1)[1]
    errors = re.search(r'<ul class="field-error" id="err-steps">(.*?)</ul>', editor, re.S)
    assert errors is not None
    assert "step 2: step_type: unknown step type" in errors.group(1)
    assert "Change world to there" in answer.text  # the goal typed is kept
    not_json = await create_through_form(client, project, plan="[{")
    assert not_json.status_code == 422 and "not JSON" in not_json.text
    assert (await client.get("/v1/agent-runs")).json()["items"] == []


async def test_the_runs_list_filters_by_status_project_and_goal_text(
    client: httpx.AsyncClient, project: Path
) -> None:
    noop = [{"step_type": "noop", "input_data": {}}]
    for goal, project_name in (("Fix the login bug", "web"), ("Tidy docs", "docs")):
        made = await client.post(
            "/v1/agent-runs", json={"goal": goal, "project": project_name, "steps": noop}
        )
        assert made.status_code == 201
    assert "Tidy docs" in (await client.get("/runs")).text
    searched = (await client.get("/runs", params={"q": "LOGIN"})).text
    assert "Fix the login bug" in searched and "Tidy docs" not in searched
    by_project = (await client.get("/runs", params={"project": "docs"})).text
    assert "Tidy docs" in by_project and "Fix the login bug" not in by_project
    none = (await client.get("/runs", params={"status": "failed"})).text
    assert "No run matches these filters" in none
    literal = (await client.get("/runs", params={"q": "%"})).text
    assert "No run matches these filters" in literal  # LIKE wildcards are matched literally


async def test_console_pages_stay_out_of_the_api_spec(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    api = ("/v1/", "/healthz", "/readyz", "/metrics")
    assert not [p for p in spec["paths"] if not p.startswith(api)]
    script = await client.get("/static/htmx.min.js")
    assert script.status_code == 200 and "htmx" in script.text[:2000]


async def test_with_auth_on_pages_need_a_login_and_the_key_s_role(
    settings: Settings, project: Path
) -> None:
    async with authed_app(settings) as authed:
        http = authed.http
        viewer = await authed.key("vic", Role.VIEWER)
        sent = await http.get("/runs?status=failed")
        assert sent.status_code == 303
        assert sent.headers["location"] == "/login?next=/runs%3Fstatus%3Dfailed"
        token = await form_token(http, "/login")
        wrong = await http.post(
            "/login",
            data={"csrf_token": token, "api_key": "ae_000000000000_nope"},
            headers=AUTHED_ORIGIN,
        )
        assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
        entered = await http.post(
            "/login",
            data={"csrf_token": token, "api_key": viewer, "next": "/\t/evil.example/"},
            headers=AUTHED_ORIGIN,
        )
        assert entered.status_code == 303 and entered.headers["location"] == "/runs"
        cookie = entered.headers["set-cookie"].lower()
        assert f"{KEY_COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert http.cookies.get(CSRF_COOKIE)
        page = await http.get("/runs")
        assert page.status_code == 200 and "vic · viewer" in page.text
        refused = await http.get("/runs/new")  # creating a run needs an operator
        assert refused.status_code == 403 and "needs &#39;operator&#39;" in refused.text
        made = await http.post(
            "/v1/agent-runs",
            json={"goal": "g", "steps": [{"step_type": "noop", "input_data": {}}]},
            headers={"Authorization": f"Bearer {await authed.key('op', Role.OPERATOR)}"},
        )
        run_id = made.json()["id"]
        token = await form_token(http, f"/runs/{run_id}")
        cancel = await http.post(
            f"/runs/{run_id}/cancel", data={"csrf_token": token}, headers=AUTHED_ORIGIN
        )
        assert cancel.status_code == 403 and "forbidden" in cancel.text
        await http.post("/logout", data={"csrf_token": token}, headers=AUTHED_ORIGIN)
        assert (await http.get("/runs")).status_code == 303
        # A key revoked after login sends the browser back to the login form.
        http.cookies.set(KEY_COOKIE, viewer)
        assert (await http.get("/runs")).status_code == 200
        await authed.guard.keys.revoke("vic", actor="test")
        again = await http.get("/runs")
        assert again.status_code == 303 and again.headers["location"].startswith("/login")


async def test_a_step_paused_for_budget_shows_its_figures_and_a_raise_lets_it_go_on(
    client: httpx.AsyncClient,
) -> None:
    analyze = {"step_type": "analyze", "input_data": {"instruction": "Say ok."}}
    made = await client.post(
        "/v1/agent-runs", json={"goal": "tight", "steps": [analyze], "budget_tokens": 10}
    )
    run_id = made.json()["id"]
    paused = (await client.post(f"/v1/agent-runs/{run_id}/execute")).json()
    assert paused["steps"][0]["status"] == "awaiting_approval"
    page = (await client.get(f"/runs/{run_id}")).text
    assert "a model call did not fit in the budget" in page
    assert f'action="/runs/{run_id}/budget"' in page and "<dt>Needed</dt>" in page
    inbox = (await client.get("/approvals")).text
    assert "<strong>budget</strong>" in inbox
    token = await form_token(client, f"/runs/{run_id}")
    raised = await client.post(
        f"/runs/{run_id}/budget",
        data={"csrf_token": token, "budget_tokens": "100000", "comment": "room to answer"},
        headers=ORIGIN,
    )
    assert raised.status_code == 303, raised.text
    run = (await client.get(f"/v1/agent-runs/{run_id}")).json()
    assert run["budget_tokens"] == 100000
    assert run["steps"][0]["status"] == "pending"


async def test_a_plan_waiting_for_approval_is_in_the_inbox_and_approved_from_the_run_page(
    client: httpx.AsyncClient,
) -> None:
    body = {"goal": "check first", "steps": [{"step_type": "noop", "input_data": {}}]}
    made = await client.post("/v1/agent-runs", json={**body, "plan_approval": True})
    run_id = made.json()["id"]
    inbox = (await client.get("/approvals")).text
    assert "Plan v1" in inbox and "the plan waits for approval" in inbox
    page = (await client.get(f"/runs/{run_id}")).text
    assert f'action="/runs/{run_id}/plan/approve"' in page
    token = await form_token(client, f"/runs/{run_id}")
    approved = await client.post(
        f"/runs/{run_id}/plan/approve", data={"csrf_token": token}, headers=ORIGIN
    )
    assert approved.status_code == 303
    assert (await client.get(f"/v1/agent-runs/{run_id}")).json()["status"] == "planned"


async def test_a_replay_made_from_the_run_page_joins_its_family_with_its_divergence_report(
    client: httpx.AsyncClient,
) -> None:
    body = {"goal": "replay me", "steps": [{"step_type": "noop", "input_data": {"value": 1}}]}
    run_id = (await client.post("/v1/agent-runs", json=body)).json()["id"]
    await client.post(f"/v1/agent-runs/{run_id}/execute")
    token = await form_token(client, f"/runs/{run_id}")
    replayed = await client.post(
        f"/runs/{run_id}/replay", data={"csrf_token": token, "mode": "hermetic"}, headers=ORIGIN
    )
    assert replayed.status_code == 303
    replay_id = replayed.headers["location"].rsplit("/", 1)[1]
    assert replay_id != run_id
    await client.post(f"/v1/agent-runs/{replay_id}/execute")
    listed = (await client.get("/runs")).text
    assert "1 derived" in listed and f'href="/runs/{replay_id}"' in listed
    page = (await client.get(f"/runs/{replay_id}")).text
    assert 'id="divergence"' in page and 'class="verdict v-match">match' in page
    compared = await client.get(f"/runs/{run_id}/compare", params={"other": replay_id})
    assert compared.status_code == 200 and 'class="verdict v-same">same' in compared.text


async def test_a_tampered_chain_is_shown_broken_at_its_event(
    client: httpx.AsyncClient, workspace_root: Path, settings: Settings
) -> None:
    run = await covered_run(client, workspace_root)
    events = Base.metadata.tables["audit_events"]
    async with raw_database(settings.database_url) as db:
        await drop_append_only(db, settings.database_url)
        await db.execute(update(events).where(events.c.seq == 5).values(actor="mallory"))
    audit = await client.get(f"/runs/{run['id']}/audit", headers={"HX-Request": "true"})
    assert 'class="bad" id="audit-state" role="alert">Broken at event 5' in audit.text
    assert "event_changed" in audit.text


async def test_a_run_s_live_stream_tells_each_change_after_the_page_s_seq_and_ends_when_it_did(
    client: httpx.AsyncClient,
) -> None:
    body = {"goal": "short", "steps": [{"step_type": "noop", "input_data": {}}]}
    run_id = (await client.post("/v1/agent-runs", json=body)).json()["id"]
    await client.post(f"/v1/agent-runs/{run_id}/execute")
    events = (await client.get(f"/v1/agent-runs/{run_id}/audit")).json()["events"]
    last = events[-1]["seq"]
    live = await client.get(f"/runs/{run_id}/live", params={"after": last - 2})
    assert live.headers["content-type"].startswith("text/event-stream")
    sent = [line for line in live.text.splitlines() if line.startswith("id:")]
    assert sent == [f"id: {last - 1}", f"id: {last}"]
    assert live.text.count("event: changed") == 2


async def test_a_planned_run_shows_the_planner_s_prompt_and_answer(
    client: httpx.AsyncClient, project: Path
) -> None:
    made = await client.post(
        "/v1/agent-runs", json={"goal": "Summarize the notes", "workspace": str(project)}
    )
    run_id = made.json()["id"]
    await client.post(f"/v1/agent-runs/{run_id}/execute")  # plans with the offline model
    page = (await client.get(f"/runs/{run_id}")).text
    assert "Planner's model call · offline:" in page
    assert "Summarize the notes" in page.split("Planner's model call", 1)[1]
