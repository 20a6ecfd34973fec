"""Plans that cannot work are refused when the run is created, each problem named by step and field.

Through the real app: a workspace must lie strictly inside a root, literal paths must stay inside
the workspace, programs must be on the allowlist, diffs must parse, and every ``$ref`` must name
an earlier step the step depends on and a field that step's output has.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from agent_engine.domain.plan import Plan
from agent_engine.engine.context import limits_from_settings
from agent_engine.engine.plans import validate_plan
from agent_engine.errors import PlanValidationError
from agent_engine.executors.registry import load_registry
from tests.backends import one_backend
from tests.conftest import noop_plan

PROBLEM = "application/problem+json"


@pytest.fixture
def workspace(workspace_root: Path) -> Path:
    target = workspace_root / "project"
    target.mkdir()
    (target / "notes.txt").write_text("alpha\n")
    return target


REFUSED_AT_CREATION = one_backend(
    "sqlite", "the plan is refused by the checks made before the run is written"
)


def refused(response: httpx.Response, code: str = "invalid_plan") -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def create(
    client: httpx.AsyncClient, steps: list[dict[str, Any]], workspace: Path | str | None
) -> httpx.Response:
    body: dict[str, Any] = {"goal": "check", "steps": steps}
    if workspace is not None:
        body["workspace"] = str(workspace)
    return await client.post("/v1/agent-runs", json=body)


async def no_runs(client: httpx.AsyncClient) -> bool:
    return (await client.get("/v1/agent-runs")).json()["items"] == []


# --- the workspace ------------------------------------------------------------------------------


async def test_a_workspace_root_itself_is_refused_as_a_workspace(
    client: httpx.AsyncClient, workspace_root: Path, workspace: Path
) -> None:
    for candidate in (str(workspace_root), f"{workspace_root}/", f"{workspace}/.."):
        body = refused(await create(client, noop_plan(1), candidate), "workspace_violation")
        assert "workspace root itself" in body["detail"]
        assert "use a folder inside it" in body["detail"]
    assert await no_runs(client)
    created = await create(client, noop_plan(1), workspace)
    assert created.status_code == 201, created.text
    assert created.json()["workspace"] == str(workspace.resolve())


# --- literal inputs -----------------------------------------------------------------------------


@REFUSED_AT_CREATION
async def test_literal_paths_leaving_the_workspace_are_refused_naming_each_step_and_field(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = [
        {"step_type": "read_file", "input_data": {"path": "/etc/passwd"}},
        {"step_type": "read_file", "input_data": {"path": "notes.txt"}},
        {
            "step_type": "edit_file",
            "input_data": {"path": "../other/config.py", "operation": "write", "content": "x"},
        },
        {"step_type": "list_files", "input_data": {"patterns": ["*.py", "../**"]}},
        {"step_type": "run_command", "input_data": {"argv": ["git", "status"], "cwd": "../.."}},
    ]
    body = refused(await create(client, steps, workspace))
    assert [(e["step_number"], e["field"]) for e in body["errors"]] == [
        (1, "path"),
        (3, "path"),
        (4, "patterns.1"),
        (5, "cwd"),
    ]
    assert "'/etc/passwd' is absolute" in body["errors"][0]["message"]
    assert "'..' component" in body["errors"][1]["message"]
    assert body["detail"].startswith("step 1: input_data.path: '/etc/passwd' is absolute")
    assert "and 1 more" in body["detail"]
    assert await no_runs(client)


@REFUSED_AT_CREATION
async def test_a_patch_that_does_not_parse_is_refused_at_creation(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = [
        {
            "step_type": "edit_file",
            "input_data": {"path": "notes.txt", "operation": "patch", "diff": "+just a line\n"},
        }
    ]
    body = refused(await create(client, steps, workspace))
    assert body["errors"] == [
        {"step_number": 1, "field": "diff", "message": "unexpected line in diff: '+just a line'"}
    ]


async def test_inputs_given_by_reference_are_checked_only_when_they_run(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    # The path comes from step 1's output: unknown until then, so creation accepts it.
    steps = [
        {"step_type": "noop", "input_data": {"value": "/etc/passwd"}},
        {"step_type": "read_file", "input_data": {"path": {"$ref": "steps.1.output.value"}}},
    ]
    created = await create(client, steps, workspace)
    assert created.status_code == 201, created.text


# --- references ---------------------------------------------------------------------------------


@REFUSED_AT_CREATION
@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            "steps.9.output",
            "reference 'steps.9.output' names step 9, but there is no step 9 "
            "(the plan has 2 steps)",
        ),
        (
            "steps.2.output",
            "reference 'steps.2.output' names step 2 itself; a step can only use earlier outputs",
        ),
        (
            "steps.1.output.nonexistent",
            "reference 'steps.1.output.nonexistent': step 1 (read_file): the output has no "
            "'nonexistent' (its fields are content, encoding, end_line, line_count, path, "
            "sha256, size, start_line)",
        ),
        (
            "steps.1.output.content.first",
            "reference 'steps.1.output.content.first': step 1 (read_file): 'content' has no "
            "'first' (it is a string)",
        ),
    ],
)
async def test_references_that_cannot_resolve_say_why(
    client: httpx.AsyncClient, workspace: Path, ref: str, message: str
) -> None:
    steps = [
        {"step_type": "read_file", "input_data": {"path": "notes.txt"}},
        {"step_type": "analyze", "input_data": {"instruction": "x", "inputs": [{"$ref": ref}]}},
    ]
    body = refused(await create(client, steps, workspace))
    assert body["errors"] == [{"step_number": 2, "field": "inputs.0", "message": message}]
    assert body["detail"] == f"step 2: input_data.inputs.0: {message}"


@REFUSED_AT_CREATION
async def test_a_reference_to_a_later_step_is_refused(client: httpx.AsyncClient) -> None:
    steps = [
        {"step_type": "noop", "input_data": {"value": {"$ref": "steps.3.output"}}},
        *noop_plan(2),
    ]
    body = refused(await create(client, steps, None))
    assert body["errors"][0]["message"] == (
        "reference 'steps.3.output' names step 3, which comes after step 1; "
        "a step can only use earlier outputs"
    )
    assert (body["errors"][0]["step_number"], body["errors"][0]["field"]) == (1, "value")


async def test_references_into_nested_outputs_follow_the_schema(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    good = [
        {"step_type": "list_files", "input_data": {}},
        {"step_type": "noop", "input_data": {"value": {"$ref": "steps.1.output.files.0.path"}}},
        {"step_type": "noop", "input_data": {"value": {"$ref": "steps.2.output.value.any.x"}}},
    ]
    created = await create(client, good, workspace)
    assert created.status_code == 201, created.text
    bad = [
        good[0],
        {"step_type": "noop", "input_data": {"value": {"$ref": "steps.1.output.files.0.name"}}},
    ]
    body = refused(await create(client, bad, workspace))
    assert body["errors"][0]["message"].endswith(
        "'files.0' has no 'name' (its fields are path, sha256, size)"
    )


@REFUSED_AT_CREATION
async def test_every_problem_of_every_step_is_listed_at_once(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = [
        {"step_type": "noop", "input_data": {"fail": "maybe"}},
        {"step_type": "teleport", "input_data": {}},
        {"step_type": "read_file", "input_data": {"path": "../x"}},
        {"step_type": "noop", "input_data": {"value": [{"$ref": "steps.7.output"}]}},
    ]
    body = refused(await create(client, steps, workspace))
    assert [(e["step_number"], e["field"]) for e in body["errors"]] == [
        (1, "fail"),
        (2, "step_type"),
        (3, "path"),
        (4, "value.0"),
    ]
    assert "teleport" in body["detail"]


# --- the allowlist ------------------------------------------------------------------------------


@one_backend("sqlite", "no database is opened: the settings only give the limits")
def test_validate_plan_with_the_engine_limits_refuses_programs_off_the_allowlist(
    settings: Settings,
) -> None:
    allowed = settings.model_copy(update={"command_allowlist": [sys.executable, "git"]})
    plan = Plan.model_validate(
        {
            "steps": [
                {"step_type": "run_command", "input_data": {"argv": ["git", "status"]}},
                {"step_type": "run_command", "input_data": {"argv": ["rm", "-rf", "."]}},
                {"step_type": "run_command", "input_data": {"argv": [sys.executable, "-V"]}},
                {"step_type": "run_command", "input_data": {"argv": ["/bin/sh", "-c", "x"]}},
            ]
        }
    )
    registry = load_registry()
    with pytest.raises(PlanValidationError) as caught:
        validate_plan(plan, registry, has_workspace=True, limits=limits_from_settings(allowed))
    assert caught.value.data["errors"] == [
        {"step_number": 2, "field": "argv.0", "message": "'rm' is not on the allowlist"},
        {"step_number": 4, "field": "argv.0", "message": "'/bin/sh' is not on the allowlist"},
    ]
    # Without the limits (a caller that does not pass them) the allowlist is left to run time.
    validate_plan(plan, registry, has_workspace=True)


@REFUSED_AT_CREATION
async def test_a_program_off_the_allowlist_is_refused_at_creation(
    client: httpx.AsyncClient, workspace: Path
) -> None:
    steps = [{"step_type": "run_command", "input_data": {"argv": ["rm", "-rf", "."]}}]
    body = refused(await create(client, steps, workspace))
    assert body["errors"] == [
        {"step_number": 1, "field": "argv.0", "message": "'rm' is not on the allowlist"}
    ]
