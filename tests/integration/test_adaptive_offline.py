"""The offline model plans adaptively, with no key: on a copy of the sample workspace with a
failing test, "Fix the failing test" first runs the tests, then reads what failed (a revision),
then works from what it read; the embedded worker drives it, woken only by notifications."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from agent_engine.config import Settings
from tests.integration.test_workers import embedded_worker_client, wait_for
from tests.policies import UNATTENDED, unattended_policies

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_workspace"


@pytest.fixture
def failing_workspace(workspace_root: Path) -> Path:
    target = workspace_root / "sample"
    shutil.copytree(SAMPLE, target)
    tests = target / "tests" / "test_models.py"
    source = tests.read_text(encoding="utf-8")
    tests.write_text(source.replace(").value == 10.0", ").value == 11.0"), encoding="utf-8")
    return target


async def test_the_offline_model_runs_the_tests_then_reads_what_failed_then_goes_on(
    settings: Settings, failing_workspace: Path, tmp_path: Path
) -> None:
    policed = settings.model_copy(update={"policies_file": unattended_policies(tmp_path)})
    async with embedded_worker_client(policed, poll_s=600.0) as http:
        body = {
            "goal": "Fix the failing test",
            "workspace": str(failing_workspace),
            "planning": "adaptive",
            "policy": UNATTENDED,
            "auto_start": True,
        }
        response = await http.post("/v1/agent-runs", json=body)
        assert response.status_code == 201, response.text
        run_id = response.json()["id"]
        done = await wait_for(http, run_id, {"completed", "failed"}, limit_s=60)
        steps: list[dict[str, Any]] = done["steps"]
        assert done["status"] == "completed", [(s["step_type"], s["error"]) for s in steps]

        first = (await http.get(f"/v1/agent-runs/{run_id}/plan?version=1")).json()
        assert [s["step_type"] for s in first["document"]["steps"]] == [
            "list_files",
            "run_command",
        ]
        assert steps[1]["input_data"]["argv"] == ["python3", "-m", "pytest", "-q"]
        assert steps[1]["output_data"]["exit_code"] != 0

        second = (await http.get(f"/v1/agent-runs/{run_id}/plan?version=2")).json()
        assert second["source"] == "revision"
        added = second["document"]["revision"]["added"]
        reads = [second["document"]["steps"][n - 1] for n in added]
        paths = [r["input_data"]["path"] for r in reads]
        assert {r["step_type"] for r in reads} == {"read_file"}
        # The file the failure names first, then the module its tests cover.
        assert paths == ["tests/test_models.py", "inventory/models.py"]
        assert all(s["status"] == "completed" for s in steps[2:4])

        audit = (await http.get(f"/v1/agent-runs/{run_id}/audit")).json()["events"]
        decisions = [e["type"] for e in audit if e["type"].startswith("plan.")]
        # list_files: the rest stands; tests: read; first read: stands; second: work from it.
        assert decisions == [
            "plan.recorded",
            "plan.kept",
            "plan.revised",
            "plan.kept",
            "plan.revised",
            *decisions[5:],
        ]
        after_reads = [s["step_type"] for s in steps[4:]]
        # propose_edit, where registered, proposes the fix; without it the reads are analyzed.
        assert after_reads[:1] in (["propose_edit"], ["analyze"])
        assert after_reads[-1] == "summarize"
