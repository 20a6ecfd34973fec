"""Schemathesis against the live app's own OpenAPI spec: every operation, a bounded number of
derandomized examples each, on SQLite; then the operations on a run again, on real runs in
several states. No answer may be a 5xx, and every answer (status code, content type, body)
must be one the spec documents."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from tests.databases import sqlite_url

# Schemathesis makes an item per operation, all with the test's own node id, and pytest-xdist
# schedules by node id: under it only one operation of each test would run. `make test` runs
# this module in a process of its own (the ``one_process`` mark); under xdist it skips loudly.
pytestmark = [
    pytest.mark.one_process,
    pytest.mark.skipif(
        "PYTEST_XDIST_WORKER" in os.environ,
        reason="under pytest-xdist only one operation would run: run without -n (make test does)",
    ),
]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BOUNDED = hypothesis_settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# The tests are generated from the spec when the module is collected, so the app is built then;
# it reaches its database only on the first call, once the fixture below has laid it down.
FOLDER = Path(tempfile.mkdtemp(prefix="agent-engine-schemathesis-"))
atexit.register(shutil.rmtree, FOLDER, ignore_errors=True)  # also when no test here ran
DATABASE = FOLDER / "fuzz.db"
WORKSPACES = FOLDER / "workspaces"
# Workspaces only under a tmp root, and no program allowed to run: nothing a generated plan asks
# for can reach outside the tmp folder. No worker either: only the requests themselves act.
APP = create_app(
    Settings(
        database_url=sqlite_url(DATABASE),
        auto_migrate=False,
        embedded_worker=False,
        workspace_roots=[WORKSPACES],
        command_allowlist=[],
        _env_file=None,  # type: ignore[call-arg]
    )
)


async def on_loopback(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app as a client on this machine reaches it (schemathesis names its client
    "testclient"), which is how the embedded default is reached."""
    if scope["type"] == "http":
        scope = {**scope, "client": ("127.0.0.1", 50000)}
    await APP(scope, receive, send)


schema = schemathesis.openapi.from_dict(APP.openapi()).exclude(
    # The global event stream never ends by design (it follows every run, live).
    path="/v1/events"
)
schema.app = on_loopback
# Valid requests and invalid ones (wrong types, missing fields, out-of-range values) alike.
schema.config.generation.update(modes=list(schemathesis.GenerationMode))
# Real runs (and their first step) that the operations on a run are pointed at, in turn.
REAL_RUNS: list[tuple[str, str]] = []


def _real_runs() -> list[tuple[str, str]]:
    """Runs in different states: a step waiting for approval, a plan waiting for approval, a
    failed step, a goal the offline planner plans, and a finished run."""
    noop: dict[str, Any] = {"step_type": "noop", "input_data": {"value": 1}}
    bodies: list[tuple[dict[str, Any], int]] = [
        ({"steps": [{**noop, "requires_approval": True}, noop]}, 1),
        ({"steps": [noop], "plan_approval": True}, 0),
        ({"steps": [{"step_type": "noop", "input_data": {"fail": True}}]}, 1),
        ({}, 0),
        ({"steps": [noop]}, 1),
    ]
    runs = []
    with get_client(on_loopback) as client:
        for body, executions in bodies:
            created = client.post("/v1/agent-runs", json={"goal": "fuzz target", **body})
            assert created.status_code == 201, created.text
            run = created.json()
            for _ in range(executions):
                client.post(f"/v1/agent-runs/{run['id']}/execute")
            step = run["steps"][0]["id"] if run["steps"] else run["id"]
            runs.append((run["id"], step))
    return runs


@pytest.fixture(scope="module", autouse=True)
def fuzzed_database(sqlite_template: Path) -> Iterator[None]:
    WORKSPACES.mkdir(exist_ok=True)
    shutil.copyfile(sqlite_template, DATABASE)
    REAL_RUNS[:] = _real_runs()
    yield
    shutdown_lifespans()  # the app's lifespan, which schemathesis started on its first call


@schema.parametrize()
@BOUNDED
def test_every_operation_answers_as_its_spec_says(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


_turns = itertools.count()


@schema.include(path_regex=r"\{run_id\}").parametrize()
@BOUNDED
def test_operations_on_real_runs_answer_as_their_spec_says(case: schemathesis.Case) -> None:
    run_id, step_id = REAL_RUNS[next(_turns) % len(REAL_RUNS)]
    ids = {"run_id": run_id, "step_id": step_id}
    case.path_parameters = {name: ids.get(name, v) for name, v in case.path_parameters.items()}
    case.call_and_validate(checks=CHECKS)
