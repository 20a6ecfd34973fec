"""``GET /v1/costs`` on both backends: totals of the ledger grouped in SQL by day, model, step
type, project and key, filtered by dates and project, as JSON and CSV; bad parameters 422."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_engine.config import Settings
from agent_engine.domain.records import ChangeSet, RunRecord
from agent_engine.engine.context import EngineContext
from agent_engine.engine.ledger import record_calls
from agent_engine.llm.base import LLMCallRecord, Usage
from tests.fakes.llm_servers import FakeLLMServer
from tests.integration.test_cost_savings import ANALYZE, findings
from tests.savings import priced_app, run_steps, summarize

KEY = uuid.uuid4()
SMALL = Decimal("0.000120000")  # a summary on mini-1
MEDIUM = Decimal("0.001200000")  # an analysis on coder-1


async def _ledger_only_run(ctx: EngineContext, days: list[tuple[str, str]]) -> None:
    """A run of project ``alpha`` under KEY whose planner made one call per (day, cost)."""
    run = RunRecord(
        id=uuid.uuid4(), goal="g", status="created", created_by="t", project="alpha", api_key_id=KEY
    )
    records = [
        LLMCallRecord(
            provider="fakeai",
            model="planner-1",
            request={"n": n},
            request_hash=f"h{n}",
            response={"text": "plan"},
            usage=Usage(input_tokens=10, output_tokens=1),
            cost_usd=Decimal(cost),
            latency_ms=1.0,
        )
        for n, (_, cost) in enumerate(days)
    ]
    changes = ChangeSet(run, [], new_run=True)
    rows = record_calls(changes, run, None, records, purpose="plan")
    for row, (day, _) in zip(rows, days, strict=True):
        row["created_at"] = datetime.fromisoformat(f"{day}T23:59:59").replace(tzinfo=UTC)
    await ctx.changes.insert(changes)


async def _costs(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/costs", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def ledger(settings: Settings, tmp_path: Path) -> Any:
    """The app over a ledger of one real run (a summary, an analysis) today and a project's
    planner calls on 1 and 2 November 2026."""
    with FakeLLMServer(findings) as server:
        async with priced_app(settings, server, tmp_path) as (app, client):
            run = await run_steps(client, [summarize("text"), ANALYZE])
            assert run["status"] == "completed"
            await _ledger_only_run(
                app.state.engine,
                [("2026-11-01", "0.5"), ("2026-11-01", "0.25"), ("2026-11-02", "0.000000001")],
            )
            yield client


async def test_totals_without_grouping_add_up_every_call(ledger: httpx.AsyncClient) -> None:
    body = await _costs(ledger)
    (row,) = body["rows"]
    assert row["calls"] == 5
    assert Decimal(str(row["cost_usd"])) == SMALL + MEDIUM + Decimal("0.750000001")
    assert body["totals"]["calls"] == 5


async def test_grouping_by_model_and_by_step_type(ledger: httpx.AsyncClient) -> None:
    by_model = {r["model"]: r for r in (await _costs(ledger, group_by="model"))["rows"]}
    assert set(by_model) == {"fakeai:coder-1", "fakeai:mini-1", "fakeai:planner-1"}
    assert Decimal(str(by_model["fakeai:coder-1"]["cost_usd"])) == MEDIUM
    assert by_model["fakeai:planner-1"]["calls"] == 3
    assert by_model["fakeai:mini-1"]["input_tokens"] == 1000
    by_type = {
        r["step_type"]: r["calls"] for r in (await _costs(ledger, group_by="step_type"))["rows"]
    }
    assert by_type == {"analyze": 1, "plan": 3, "summarize": 1}  # a planner call: its purpose


async def test_grouping_by_several_keys_with_date_and_project_filters(
    ledger: httpx.AsyncClient,
) -> None:
    body = await _costs(ledger, group_by=["project", "day"], since="2026-11-01", until="2026-11-02")
    assert [(r["project"], r["day"], r["calls"]) for r in body["rows"]] == [
        ("alpha", "2026-11-01", 2),
        ("alpha", "2026-11-02", 1),
    ]
    assert body["rows"][0]["cost_usd"] == 0.75
    assert body["rows"][1]["cost_usd"] == 0.000000001  # exact to the last digit, SQLite too
    only_first = await _costs(ledger, group_by="key,day", until="2026-11-01", project="alpha")
    assert [(r["key"], r["day"]) for r in only_first["rows"]] == [(str(KEY), "2026-11-01")]
    today = await _costs(ledger, group_by="project", since=datetime.now(UTC).date().isoformat())
    assert [(r["project"], r["calls"]) for r in today["rows"]] == [(None, 2)]


async def test_csv_has_a_header_row_and_one_row_per_group(ledger: httpx.AsyncClient) -> None:
    response = await ledger.get("/v1/costs", params={"group_by": "model", "format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0][:3] == ["model", "calls", "cached_calls"]
    assert "cost_usd" in table[0] and "saved_by_cache_usd" in table[0]
    rows = {line[0]: dict(zip(table[0], line, strict=True)) for line in table[1:]}
    assert set(rows) == {"fakeai:coder-1", "fakeai:mini-1", "fakeai:planner-1"}
    assert rows["fakeai:planner-1"]["cost_usd"] == "0.750000001"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "colour"}, "group_by"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-03", "until": "2026-11-01"}, "since"),
        ({"format": "xml"}, "format"),
    ],
)
async def test_bad_parameters_are_a_422_problem(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/v1/costs", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.text
