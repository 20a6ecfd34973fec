"""Replaying the adaptive "fix the failing test" run from its records, with the command a user
types, on a real ``agent-engine serve``: ``agent-engine runs replay RUN --mode verify --wait``
reproduces the plan, both revisions, the proposed edit and the approval without one request to
the model, without running the tests and without writing the file; bad input is one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_fix_the_failing_test import BAD, GOOD, NEW, OLD, RATIONALE, STORE, catalog
from tests.fakes.fixing_model import FixingModel
from tests.fakes.llm_servers import FakeLLMServer
from tests.fix_flow import (
    approve,
    audit_types,
    broken_copy,
    create_fix_run,
    plan_versions,
    serve,
    steps_of,
    wait_until,
)
from tests.integration.test_cli import run_command
from tests.sandboxing import require_sandbox

pytestmark = pytest.mark.slow
TERMINAL = {"completed", "failed", "cancelled"}


def fix_run(client: httpx.Client, workspace: Path) -> dict[str, object]:
    created = create_fix_run(client, workspace, max_steps=12, max_replans=5)
    waiting = wait_until(client, str(created["id"]), {"awaiting_approval", "failed", "completed"})
    assert waiting["status"] == "awaiting_approval", steps_of(waiting)
    edit = next(s for s in waiting["steps"] if s["status"] == "awaiting_approval")
    approve(client, waiting, edit)
    return wait_until(client, str(created["id"]), TERMINAL)


def test_verify_replay_of_an_adaptive_fix_reproduces_its_revisions_and_edit(
    tmp_path: Path,
) -> None:
    require_sandbox()
    fixing = FixingModel(path=STORE, old=OLD, new=NEW, rationale=RATIONALE)
    with FakeLLMServer(responder=fixing) as server:
        settings = {
            "AGENT_ENGINE_MODELS_FILE": str(
                catalog(tmp_path, server.openai_base_url, "json_schema")
            ),
            "AGENT_ENGINE_MODEL": "fakeai:coder-1",
        }
        with serve(tmp_path, **settings) as (client, workspaces):
            workspace = broken_copy(workspaces, STORE, GOOD, BAD)
            original = fix_run(client, workspace)
            assert original["status"] == "completed", steps_of(original)
            asked = len(server.requests)
            assert asked == 7

            # Back to the broken file the original started from; verify writes nothing.
            shutil.rmtree(workspace)
            broken_copy(workspaces, STORE, GOOD, BAD)
            broken = (workspace / STORE).read_bytes()
            url = str(client.base_url)
            done = run_command(
                "runs",
                "replay",
                str(original["id"]),
                "--mode",
                "verify",
                "--wait",
                "--url",
                url,
                cwd=tmp_path,
            )
            assert done.returncode == 0, done.stderr
            replay_id, status = done.stdout.split()
            assert status == "completed"
            again = client.get(f"/v1/agent-runs/{replay_id}").json()

            assert again["replay_of"] == original["id"] and again["replay_mode"] == "verify"
            assert [(s["step_type"], s["status"], s["output_hash"]) for s in again["steps"]] == [
                (s["step_type"], s["status"], s["output_hash"]) for s in original["steps"]
            ]
            assert again["adaptive"] == original["adaptive"]
            assert [v["plan_hash"] for v in plan_versions(client, again)] == [
                v["plan_hash"] for v in plan_versions(client, original)
            ]
            assert float(again["total_cost_usd"]) == 0
            assert len(server.requests) == asked  # the model saw nothing
            assert (workspace / STORE).read_bytes() == broken  # the edit was checked, not made
            proposed = again["steps"][3]["output_data"]
            assert proposed == original["steps"][3]["output_data"]
            events = audit_types(client, replay_id)
            approved = [e for e in events if e["type"] == "step.approved"]
            assert [e["actor"] for e in approved] == ["alice"]
            assert "effect.intent" not in [e["type"] for e in events]
            cost = client.get(f"/v1/agent-runs/{replay_id}/cost").json()
            calls = {kind: entry["calls"] for kind, entry in cost["by_step_type"].items()}
            assert calls == {"plan": 1, "revision": 4, "propose_edit": 1, "summarize": 1}

            # Bad input: one line each, never a traceback.
            for args, fragment in [
                (("runs", "replay", "not-a-run", "--url", url), "no run with id 'not-a-run'"),
                (("runs", "replay", replay_id, "--mode", "live", "--url", url), "unknown mode"),
                (("runs", "replay", replay_id, "--url", "http://127.0.0.1:9"), "cannot reach"),
            ]:
                failed = run_command(*args, cwd=tmp_path)
                assert failed.returncode != 0
                lines = failed.stderr.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("error:"), failed.stderr
                assert fragment in lines[0]
