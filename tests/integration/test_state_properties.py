"""Property: no sequence of API calls reaches a state the transition tables forbid, and the audit
log holds exactly one event per transition (each event starts where the previous one ended)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from agent_engine.domain.states import RUN_TRANSITIONS, STEP_TRANSITIONS, RunStatus, StepStatus
from tests.apps import app_on_loop, database_for
from tests.databases import PostgresServer

step_specs = st.fixed_dictionaries(
    {
        "requires_approval": st.booleans(),
        "optional": st.booleans(),
        "fail": st.booleans(),
    }
)
operations = st.lists(
    st.one_of(
        st.just(("execute", 0)),
        st.tuples(st.sampled_from(["approve", "reject"]), st.integers(0, 3)),
        st.just(("cancel", 0)),
    ),
    min_size=1,
    max_size=12,
)


async def _scenario(
    client: httpx.AsyncClient, specs: list[dict[str, bool]], ops: list[Any]
) -> None:
    steps = [
        {
            "step_type": "noop",
            "input_data": {"value": n, "fail": spec["fail"]},
            "requires_approval": spec["requires_approval"],
            "optional": spec["optional"],
        }
        for n, spec in enumerate(specs)
    ]
    created = await client.post("/v1/agent-runs", json={"goal": "property", "steps": steps})
    assert created.status_code == 201
    run = created.json()
    for name, index in ops:
        if name == "execute":
            response = await client.post(f"/v1/agent-runs/{run['id']}/execute")
        elif name == "cancel":
            response = await client.post(f"/v1/agent-runs/{run['id']}/cancel")
        else:
            step = run["steps"][index % len(run["steps"])]
            body = {"reason": "no"} if name == "reject" else {}
            response = await client.post(
                f"/v1/agent-runs/{run['id']}/steps/{step['id']}/{name}", json=body
            )
        assert response.status_code in (200, 409), response.text
    final = (await client.get(f"/v1/agent-runs/{run['id']}")).json()
    audit = (await client.get(f"/v1/agent-runs/{run['id']}/audit")).json()
    assert audit["chain_valid"]
    _check_history(final, audit["events"])


def _check_history(final: dict[str, Any], events: list[dict[str, Any]]) -> None:
    run_state = RunStatus.CREATED
    step_states: dict[str, StepStatus] = defaultdict(lambda: StepStatus.PENDING)
    for event in events:
        kind = event["type"].split(".")[0]
        if kind == "run" and event["type"] != "run.created":
            source, target = RunStatus(event["payload"]["from"]), RunStatus(event["payload"]["to"])
            assert source == run_state, f"run event {event['seq']} starts from {source}"
            assert target in RUN_TRANSITIONS[source]
            run_state = target
        elif kind == "step":
            step_id = event["step_id"]
            source = StepStatus(event["payload"]["from"])
            target = StepStatus(event["payload"]["to"])
            assert source == step_states[step_id], f"step event {event['seq']} skips a state"
            assert target in STEP_TRANSITIONS[source]
            step_states[step_id] = target
    assert final["status"] == run_state.value
    for step in final["steps"]:
        assert step["status"] == step_states[step["id"]].value


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_no_api_sequence_breaks_the_state_machine(
    backend: str,
    tmp_path: Path,
    sqlite_template: Path,
    postgres_server: PostgresServer | None,
) -> None:
    with (
        database_for(backend, tmp_path, sqlite_template, postgres_server) as url,
        app_on_loop(url, tmp_path) as (runner, client),
    ):

        @hypothesis_settings(
            max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        )
        @given(specs=st.lists(step_specs, min_size=1, max_size=4), ops=operations)
        def check(specs: list[dict[str, bool]], ops: list[Any]) -> None:
            runner.run(_scenario(client, specs, ops))

        check()
