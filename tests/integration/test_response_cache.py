"""The response cache against real databases and a loopback provider: a repeated request is
served from the ledger at $0 with what it saved recorded, and only a repeated one."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from agent_engine.config import Settings
from tests.fakes.llm_servers import FakeLLMServer, openai_completion
from tests.replay_flow import finish, replay
from tests.savings import ledger_rows, priced_app, run_steps, summarize

ANSWER = openai_completion("a summary", prompt_tokens=1000, completion_tokens=100)
# A summary is routed to the small model: 1000 x $0.1 + 100 x $0.2 per million tokens.
FIRST_COST = Decimal("0.000120000")


async def test_a_repeated_request_in_a_cache_enabled_run_reaches_the_provider_once(
    settings: Settings, tmp_path: Path
) -> None:
    with FakeLLMServer(lambda received: ANSWER) as server:
        async with priced_app(settings, server, tmp_path) as (app, client):
            run = await run_steps(
                client, [summarize("same text"), summarize("same text")], response_cache=True
            )
            rows = await ledger_rows(app.state.engine, run["id"])
            cost = (await client.get(f"/v1/agent-runs/{run['id']}/cost")).json()

    assert run["status"] == "completed"
    assert len(server.requests) == 1
    first, second = rows
    assert (first.cached, first.cost_usd, first.input_tokens) == (False, FIRST_COST, 1000)
    assert second.cached is True and second.saving == "cache"
    assert second.cost_usd == Decimal(0)
    assert (second.input_tokens, second.output_tokens) == (0, 0)
    assert second.saved_usd == first.cost_usd
    assert second.cache_of == first.id
    assert second.request_hash == first.request_hash
    assert run["steps"][1]["output_data"]["text"] == run["steps"][0]["output_data"]["text"]
    assert Decimal(str(run["total_cost_usd"])) == sum(r.cost_usd for r in rows) == FIRST_COST
    assert run["input_tokens"] == 1000  # the cached call's tokens are not spent
    assert cost["saved_by_cache_usd"] == float(FIRST_COST)
    assert cost["consistent"] is True


async def test_a_run_without_the_option_never_hits_the_cache(
    settings: Settings, tmp_path: Path
) -> None:
    with FakeLLMServer(lambda received: ANSWER) as server:
        async with priced_app(settings, server, tmp_path) as (app, client):
            warm = await run_steps(client, [summarize("same text")], response_cache=True)
            run = await run_steps(client, [summarize("same text"), summarize("same text")])
            rows = await ledger_rows(app.state.engine, run["id"])

    assert warm["status"] == run["status"] == "completed"
    assert len(server.requests) == 3
    assert [r.cached for r in rows] == [False, False]
    assert Decimal(str(run["total_cost_usd"])) == 2 * FIRST_COST


async def test_the_global_setting_serves_a_request_recorded_by_another_run(
    settings: Settings, tmp_path: Path
) -> None:
    with FakeLLMServer(lambda received: ANSWER) as server:
        async with priced_app(settings, server, tmp_path, response_cache=True) as (app, client):
            first = await run_steps(client, [summarize("shared text")])
            second = await run_steps(client, [summarize("shared text")])
            (row,) = await ledger_rows(app.state.engine, second["id"])
            (original,) = await ledger_rows(app.state.engine, first["id"])

    assert len(server.requests) == 1
    assert row.cached and row.cache_of == original.id and row.saved_usd == FIRST_COST
    assert Decimal(str(second["total_cost_usd"])) == 0


async def test_a_replay_of_a_run_with_cached_calls_is_served_from_its_records(
    settings: Settings, tmp_path: Path
) -> None:
    with FakeLLMServer(lambda received: ANSWER) as server:
        async with priced_app(settings, server, tmp_path, embedded_worker=True) as (app, client):
            run = await run_steps(
                client, [summarize("same text"), summarize("same text")], response_cache=True
            )
            sent = len(server.requests)
            again = await replay(client, run["id"])
            replayed = await finish(client, again["id"])
            rows = await ledger_rows(app.state.engine, again["id"])

    assert sent == 1 and len(server.requests) == 1  # the replay reached no provider
    assert replayed["status"] == "completed"
    assert [r.replayed for r in rows] == [True, True]
    assert [r.cached for r in rows] == [False, False]  # served by replay, not by the cache
    assert all(r.cost_usd == 0 for r in rows)
