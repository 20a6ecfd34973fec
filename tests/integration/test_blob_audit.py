"""Blobs and the audit: a run whose step output went to ``blobs`` verifies in the database and
as an exported bundle (hashes are over the whole documents), a bundle that lacks the blob is
refused by name, and a changed blob is found."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from agent_engine.engine.bundles import verify_bundle
from tests.fakes.llm_servers import FakeLLMServer
from tests.forking import analysis_reply, finished_run, project, serving

BIG = "".join(f"line {n}: {'x' * 60}\n" for n in range(3000))  # ~200 KB, over the threshold


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(responder=analysis_reply) as server:
        yield server


@pytest.fixture
async def api(
    settings: Settings, tmp_path: Path, model_server: FakeLLMServer
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings, tmp_path, model_server) as http:
        yield http


async def exported_big_run(api: httpx.AsyncClient, workspace_root: Path) -> dict[str, Any]:
    workspace = project(workspace_root)
    (workspace / "big.txt").write_text(BIG, encoding="utf-8")
    steps = [
        {"step_type": "read_file", "input_data": {"path": "big.txt"}},
        {
            "step_type": "analyze",
            "input_data": {"instruction": "Look", "inputs": [{"$ref": "steps.1.output.content"}]},
        },
    ]
    run = await finished_run(api, workspace, steps)
    assert run["steps"][0]["output_data"]["content"] == BIG  # served whole
    verified = (await api.get(f"/v1/agent-runs/{run['id']}/audit/verify")).json()
    assert verified["valid"] is True, verified
    exported = await api.get(f"/v1/agent-runs/{run['id']}/export")
    assert exported.status_code == 200, exported.text
    return dict(exported.json())


async def test_a_blobbed_run_verifies_in_the_database_and_as_a_bundle(
    api: httpx.AsyncClient, workspace_root: Path
) -> None:
    bundle = await exported_big_run(api, workspace_root)
    assert bundle["blobs"], "the big content was stored once as a blob and exported with it"
    assert BIG not in str(bundle["steps"])  # the rows carry the reference, not a copy
    assert verify_bundle(bundle)["valid"] is True
    manifest = bundle["manifest"]
    assert manifest["run_id"] == bundle["run"]["id"] and manifest["manifest_hash"]


async def test_a_bundle_without_its_blob_or_with_a_changed_one_fails_by_name(
    api: httpx.AsyncClient, workspace_root: Path
) -> None:
    bundle = await exported_big_run(api, workspace_root)
    missing = verify_bundle({**bundle, "blobs": []})
    assert missing["valid"] is False
    assert missing["first_broken"]["kind"] == "bundle_invalid"
    assert "blob" in missing["first_broken"]["detail"]
    blob = bundle["blobs"][0]
    changed_text = base64.b64decode(blob["content"]).decode().replace("line 7:", "line 8:")
    changed = {**blob, "content": base64.b64encode(changed_text.encode()).decode()}
    tampered = verify_bundle({**bundle, "blobs": [changed, *bundle["blobs"][1:]]})
    assert tampered["valid"] is False
    # The first blob may be the step's output or a part of the model call's request.
    kinds = {"step_output_changed", "llm_call_changed", "blob_changed"}
    assert tampered["first_broken"]["kind"] in kinds
