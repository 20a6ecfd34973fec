"""What a fork's divergence report and lineage say: the file a read diverged on with both hashes,
steps not reached yet, a run that is no fork, the list filters and the family tree."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from agent_engine.config import Settings
from agent_engine.storage.database import create_engine
from agent_engine.storage.tables import AgentRun
from tests.fakes.llm_servers import FakeLLMServer
from tests.forking import (
    NOTES,
    analysis_reply,
    finished_run,
    fork,
    four_steps,
    project,
    run_to_end,
    serving,
)
from tests.policies import UNATTENDED, unattended_policies


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


@pytest.fixture
def workspace(workspace_root: Path) -> Path:
    return project(workspace_root)


async def test_a_read_file_divergence_names_the_file_and_both_hashes(
    api: httpx.AsyncClient, workspace: Path
) -> None:
    original = await finished_run(api, workspace, four_steps()[:2])
    changed = "alpha\ngamma\n"
    (workspace / "notes.txt").write_text(changed, encoding="utf-8")
    made = await fork(api, original["id"], from_step=1)
    assert made.status_code == 201, made.text
    await run_to_end(api, made.json()["id"])
    report = (await api.get(f"/v1/agent-runs/{made.json()['id']}/divergence")).json()
    first = report["first_divergence"]
    assert first["step_number"] == 1 and first["field"] == "output.sha256"
    assert first["file"] == "notes.txt"
    assert first["expected_sha256"] == hashlib.sha256(NOTES.encode()).hexdigest()
    assert first["actual_sha256"] == hashlib.sha256(changed.encode()).hexdigest()
    assert (first["expected"], first["actual"]) == (
        first["expected_sha256"],
        first["actual_sha256"],
    )
    assert [row["verdict"] for row in report["steps"]] == ["diverged", "diverged"]


async def test_divergence_of_a_run_that_is_no_replay_or_fork_is_refused(
    api: httpx.AsyncClient, workspace: Path
) -> None:
    original = await finished_run(api, workspace, four_steps()[:1])
    refused = await api.get(f"/v1/agent-runs/{original['id']}/divergence")
    assert refused.status_code == 409
    assert refused.json()["code"] == "not_a_replay_or_fork"


async def test_a_fork_not_run_yet_reports_its_later_steps_not_reached(
    api: httpx.AsyncClient, workspace: Path
) -> None:
    original = await finished_run(api, workspace)
    made = await fork(api, original["id"], from_step=3)
    report = (await api.get(f"/v1/agent-runs/{made.json()['id']}/divergence")).json()
    assert [row["verdict"] for row in report["steps"]] == [
        "match",
        "match",
        "not_reached",
        "not_reached",
    ]
    assert report["first_divergence"] is None and report["verdict"] == "incomplete"


async def test_lineage_filters_and_the_family_tree(api: httpx.AsyncClient, workspace: Path) -> None:
    original = await finished_run(api, workspace, four_steps()[:2])
    first = (await fork(api, original["id"], from_step=2)).json()
    second = (await fork(api, original["id"], from_step=1)).json()
    await run_to_end(api, first["id"])
    grandchild = (await fork(api, first["id"], from_step=2)).json()
    listed = (await api.get("/v1/agent-runs", params={"forked_from": original["id"]})).json()
    assert {r["id"] for r in listed["items"]} == {first["id"], second["id"]}
    assert all(r["forked_from"] == original["id"] for r in listed["items"])
    of_first = (await api.get("/v1/agent-runs", params={"forked_from": first["id"]})).json()
    assert [r["id"] for r in of_first["items"]] == [grandchild["id"]]
    replays = (await api.get("/v1/agent-runs", params={"replay_of": original["id"]})).json()
    assert replays["items"] == []
    bad = await api.get("/v1/agent-runs", params={"forked_from": "not-an-id"})
    assert bad.status_code == 422
    shown = (await api.get(f"/v1/agent-runs/{grandchild['id']}")).json()
    assert (shown["forked_from"], shown["from_step"], shown["replay_of"]) == (first["id"], 2, None)

    tree = (await api.get(f"/v1/agent-runs/{grandchild['id']}/family")).json()
    root = tree["root"]
    assert tree["size"] == 4 and not tree["truncated"]
    assert (root["id"], root["kind"], root["from_step"]) == (original["id"], "original", None)
    assert [(c["id"], c["kind"], c["from_step"]) for c in root["children"]] == [
        (first["id"], "fork", 2),
        (second["id"], "fork", 1),
    ]
    assert [c["id"] for c in root["children"][0]["children"]] == [grandchild["id"]]
    assert root["children"][1]["children"] == []


async def _as_replay(settings: Settings, run_id: str, of: str) -> None:
    """Make run ``run_id`` what the replay endpoint makes: a run with ``replay_of`` set."""
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(AgentRun)
                .where(AgentRun.id == uuid.UUID(run_id))
                .values(
                    replay_of=uuid.UUID(of),
                    forked_from=None,
                    from_step=None,
                    replay_mode="hermetic",
                    version=AgentRun.version + 1,
                )
            )
    finally:
        await engine.dispose()


async def test_a_replay_is_listed_reported_and_shown_in_the_family_as_one(
    api: httpx.AsyncClient, workspace: Path, settings: Settings
) -> None:
    original = await finished_run(api, workspace, four_steps()[:2])
    replay = (await fork(api, original["id"], from_step=1)).json()
    await run_to_end(api, replay["id"])
    await _as_replay(settings, replay["id"], of=original["id"])
    listed = (await api.get("/v1/agent-runs", params={"replay_of": original["id"]})).json()
    assert [(r["id"], r["replay_mode"]) for r in listed["items"]] == [(replay["id"], "hermetic")]
    assert (await api.get("/v1/agent-runs", params={"forked_from": original["id"]})).json()[
        "items"
    ] == []
    report = (await api.get(f"/v1/agent-runs/{replay['id']}/divergence")).json()
    assert (report["relation"], report["against"], report["replay_mode"]) == (
        "replay",
        original["id"],
        "hermetic",
    )
    # The same model answers the same prompts the same way: the replay matches throughout.
    assert [row["verdict"] for row in report["steps"]] == ["match", "match"]
    assert report["verdict"] == "match" and report["first_divergence"] is None
    tree = (await api.get(f"/v1/agent-runs/{original['id']}/family")).json()
    assert [(c["id"], c["kind"]) for c in tree["root"]["children"]] == [(replay["id"], "replay")]


async def test_a_command_divergence_names_the_output_that_differs(
    settings: Settings, tmp_path: Path, workspace: Path, model_server: FakeLLMServer
) -> None:
    cat = shutil.which("cat") or "/usr/bin/cat"
    unattended = settings.model_copy(
        update={"policies_file": unattended_policies(tmp_path), "command_allowlist": [cat]}
    )
    steps = [{"step_type": "run_command", "input_data": {"argv": [cat, "notes.txt"]}}]
    async with serving(unattended, tmp_path, model_server) as api:
        created = await api.post(
            "/v1/agent-runs",
            json={"goal": "g", "workspace": str(workspace), "steps": steps, "policy": UNATTENDED},
        )
        assert created.status_code == 201, created.text
        original = await run_to_end(api, created.json()["id"])
        assert original["status"] == "completed"
        (workspace / "notes.txt").write_text("changed\n", encoding="utf-8")
        made = await fork(api, original["id"], from_step=1)
        assert made.status_code == 201, made.text
        await run_to_end(api, made.json()["id"])
        report = (await api.get(f"/v1/agent-runs/{made.json()['id']}/divergence")).json()
    first = report["first_divergence"]
    # The exit code is the same; the output is not (and the duration is never compared).
    assert (first["step_number"], first["field"]) == (1, "output.stdout")
    assert (first["expected"], first["actual"]) == (NOTES, "changed\n")
    assert first["expected_hash"] != first["actual_hash"]
