"""The issue's proof, end to end: a real ``agent-engine serve`` and a competent model on loopback
(Chat Completions, structured output as its catalog entry says) fix the failing test of a copy
of the sample workspace. The run is planned adaptively: the tests run and fail, the planner reads
what failed, proposes an edit, the edit waits for a person with its exact diff, approval applies
it, the tests run again and pass, and the summary says what changed. Asserted: the file on disk,
every plan version, the audit chain, the model calls and the wire."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.llm.edit_prompts import EDIT_SCHEMA
from tests.fakes.fixing_model import TEST_ARGV, FixingModel
from tests.fakes.llm_servers import FakeLLMServer
from tests.fix_flow import (
    SAMPLE,
    approve,
    audit_types,
    broken_copy,
    create_fix_run,
    plan_versions,
    serve,
    steps_of,
    wait_until,
)
from tests.sandboxing import require_sandbox

pytestmark = pytest.mark.slow

STORE = "inventory/store.py"
# The bug: receive() books incoming stock as outgoing. Only test_receive_and_ship_move_stock
# notices.
GOOD = "item.quantity += quantity\n"
BAD = "item.quantity -= quantity\n"
# The fix the model proposes: `old` must occur once, and `-=` is also in ship().
OLD = "item.quantity -= quantity\n        return item.quantity\n\n    def ship"
NEW = "item.quantity += quantity\n        return item.quantity\n\n    def ship"
RATIONALE = "receive() subtracted the received quantity; it must add it."
EXPECTED_DIFF = (
    "--- a/inventory/store.py\n"
    "+++ b/inventory/store.py\n"
    "@@ -37,7 +37,7 @@\n"
    "         if quantity <= 0:\n"
    '             raise ValueError("received quantity must be positive")\n'
    "         item = self._items[sku]\n"
    "-        item.quantity -= quantity\n"
    "+        item.quantity += quantity\n"
    "         return item.quantity\n"
    " \n"
    "     def ship(self, sku: str, quantity: int) -> int:\n"
)


def catalog(folder: Path, base_url: str, structured_output: str) -> Path:
    """A models file with one OpenAI-compatible model on the fake server."""
    path = folder / "models.yaml"
    path.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{base_url}', api_key_env: null, timeout_s: 20}}\n"
        "models:\n"
        "  - {provider: fakeai, model: coder-1, tier: medium, context_window: 128000,"
        " max_output_tokens: 8192, prices: {input: 1, output: 2},"
        f" capabilities: {{json: true, structured_output: {structured_output}}}}}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def model() -> Iterator[tuple[FakeLLMServer, FixingModel]]:
    fixing = FixingModel(path=STORE, old=OLD, new=NEW, rationale=RATIONALE)
    with FakeLLMServer(responder=fixing) as server:
        yield server, fixing


@pytest.mark.parametrize("structured_output", ["json_schema", "tools"])
def test_fix_the_failing_test_with_a_model_on_the_wire(
    model: tuple[FakeLLMServer, FixingModel], tmp_path: Path, structured_output: str
) -> None:
    require_sandbox()
    server, fixing = model
    models_file = catalog(tmp_path, server.openai_base_url, structured_output)
    settings = {
        "AGENT_ENGINE_MODELS_FILE": str(models_file),
        "AGENT_ENGINE_MODEL": "fakeai:coder-1",
    }
    with serve(tmp_path, **settings) as (client, workspaces):
        workspace = broken_copy(workspaces, STORE, GOOD, BAD)
        broken = (workspace / STORE).read_text(encoding="utf-8")
        created = create_fix_run(client, workspace, max_steps=12, max_replans=5)
        waiting = wait_until(client, created["id"], {"awaiting_approval", "failed", "completed"})
        assert waiting["status"] == "awaiting_approval", steps_of(waiting)
        assert steps_of(waiting) == [
            (1, "run_command", "completed"),
            (2, "read_file", "completed"),
            (3, "read_file", "completed"),
            (4, "propose_edit", "completed"),
            (5, "edit_file", "awaiting_approval"),
            (6, "run_command", "pending"),
            (7, "summarize", "pending"),
        ]
        first_tests = waiting["steps"][0]["output_data"]
        assert first_tests["exit_code"] == 1
        assert (
            "FAILED tests/test_store.py::test_receive_and_ship_move_stock" in first_tests["stdout"]
        )
        assert "1 failed, 13 passed" in first_tests["stdout"]
        edit = waiting["steps"][4]
        assert edit["input_data"] == {"$ref": "steps.4.output.edit"}
        assert edit["preview"]["diff"] == EXPECTED_DIFF  # the exact diff a person approves
        assert edit["preview"]["before_sha256"] == sha256_text(broken)
        assert edit["preview"]["after_sha256"] == sha256_text((SAMPLE / STORE).read_text())
        assert waiting["steps"][3]["output_data"]["preview_diff"] == EXPECTED_DIFF
        assert (workspace / STORE).read_text(encoding="utf-8") == broken  # nothing before approval

        approve(client, waiting, edit)
        done = wait_until(client, created["id"], {"completed", "failed", "cancelled"})
        assert done["status"] == "completed", steps_of(done)
        assert [status for _, _, status in steps_of(done)] == ["completed"] * 7
        # The steps done before the approval are the same rows, unchanged since.
        assert done["steps"][:4] == waiting["steps"][:4]
        assert (workspace / STORE).read_bytes() == (SAMPLE / STORE).read_bytes()
        applied = done["steps"][4]["output_data"]
        assert (applied["path"], applied["diff"]) == (STORE, EXPECTED_DIFF)
        second_tests = done["steps"][5]["output_data"]
        assert second_tests["exit_code"] == 0 and "14 passed" in second_tests["stdout"]
        summary = done["steps"][6]["output_data"]
        assert summary["unmet_goal"] is None
        assert f"Changed `{STORE}`" in summary["text"]
        assert "+        item.quantity += quantity" in summary["text"]
        assert "14 passed" in summary["text"]
        assert done["adaptive"] == {"revisions": 2, "due_after": None, "closed": "goal_met"}

        check_plan_versions(client, done)
        check_audit(client, done, edit["id"])
        cost = client.get(f"/v1/agent-runs/{done['id']}/cost").json()
    # One recorded call per request the model received, each of them answered.
    assert server.responder_errors == [] and server.refused == []
    assert fixing.asked == [
        "plan",
        "revise",  # after the failing tests: read the test and its module
        "revise",  # after the first read: the second is still to come
        "revise",  # after the last read: propose, apply, test, summarize
        "propose_edit",
        "revise",  # after the passing tests: done
        "summarize",
    ]
    assert cost["totals"]["calls"] == len(server.requests) == 7
    calls = {kind: entry["calls"] for kind, entry in cost["by_step_type"].items()}
    assert calls == {"plan": 1, "revision": 4, "propose_edit": 1, "summarize": 1}
    assert cost["consistent"] is True
    check_wire(server, fixing, structured_output)


def check_plan_versions(client: httpx.Client, run: dict[str, Any]) -> None:
    """Three versions: the first plan, then two revisions that only add steps; every step a
    version kept is exactly as the version before it had it."""
    first, second, third = plan_versions(client, run)
    assert [s["step_type"] for s in first["document"]["steps"]] == ["run_command"]
    assert first["document"]["steps"][0]["input_data"] == {"argv": TEST_ARGV}
    assert (second["source"], third["source"]) == ("revision", "revision")
    assert second["document"]["revision"] == {"after_step": 1, "replaced": [], "added": [2, 3]}
    assert third["document"]["revision"] == {
        "after_step": 3,
        "replaced": [],
        "added": [4, 5, 6, 7],
    }
    assert second["document"]["steps"][:1] == first["document"]["steps"]
    assert third["document"]["steps"][:3] == second["document"]["steps"]
    assert [s["step_type"] for s in third["document"]["steps"][3:]] == [
        "propose_edit",
        "edit_file",
        "run_command",
        "summarize",
    ]
    assert third["plan_hash"] == run["plan_hash"]
    assert len({first["plan_hash"], second["plan_hash"], third["plan_hash"]}) == 3
    for older, newer, added in ((1, 2, [2, 3]), (2, 3, [4, 5, 6, 7])):
        diff = client.get(
            f"/v1/agent-runs/{run['id']}/plan/diff", params={"from": older, "to": newer}
        ).json()
        assert [(e["step_number"], e["change"]) for e in diff["steps"]] == [
            (n, "added") for n in added
        ]


def check_audit(client: httpx.Client, run: dict[str, Any], edit_id: str) -> None:
    """The decisions and the edit in causal order, on a chain that verifies."""
    events = audit_types(client, run["id"])
    number = {s["id"]: s["step_number"] for s in run["steps"]}
    wanted = {"step.completed", "step.awaiting_approval", "step.approved", "run.completed"}
    story = [
        (e["type"], number.get(e["step_id"]))
        for e in events
        if e["type"].startswith("plan.") or e["type"] in wanted
    ]
    assert story == [
        ("plan.recorded", None),
        ("step.completed", 1),
        ("plan.revised", None),
        ("step.completed", 2),
        ("plan.kept", None),
        ("step.completed", 3),
        ("plan.revised", None),
        ("step.completed", 4),
        ("step.awaiting_approval", 5),
        ("step.approved", 5),
        ("step.completed", 5),
        ("step.completed", 6),
        ("plan.goal_met", None),
        ("step.completed", 7),
        ("run.completed", None),
    ]
    approved = next(e for e in events if e["type"] == "step.approved")
    assert approved["step_id"] == edit_id and approved["actor"] == "alice"
    assert approved["payload"]["shown"]["diff"] == EXPECTED_DIFF
    # Only the edit waited: the tests ran under the named policy, without a person.
    assert [e["step_id"] for e in events if e["type"] == "step.awaiting_approval"] == [edit_id]


def check_wire(server: FakeLLMServer, fixing: FixingModel, structured_output: str) -> None:
    """Every JSON answer was asked for as the catalog entry says: the schema as
    ``response_format`` or as the one forced tool's parameters; the edit's schema as strict; the
    summary as plain text."""
    for task, received in zip(fixing.asked, server.requests, strict=True):
        body = received.body
        if task == "summarize":
            assert "response_format" not in body and "tools" not in body
            continue
        if structured_output == "json_schema":
            assert "tools" not in body
            assert body["response_format"]["type"] == "json_schema", task
            declared = body["response_format"]["json_schema"]
            schema = declared["schema"]
        else:
            assert "response_format" not in body
            (tool,) = body["tools"]
            assert body["tool_choice"] == {"type": "function", "function": {"name": "emit_json"}}
            declared = tool["function"]
            schema = declared["parameters"]
        if task == "propose_edit":
            assert schema == EDIT_SCHEMA and declared["strict"] is True


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
