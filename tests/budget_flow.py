"""Budget tests' shared pieces: a loopback OpenAI-wire model whose every call costs exactly its
worst case (so a budget of N worst cases fits exactly N calls), its catalog, and a way to fire
many claimed steps at once the way parallel workers would."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agent_engine.config import Settings
from agent_engine.domain.plan import PlanStep
from agent_engine.engine.claiming import Claim
from agent_engine.engine.context import EngineContext
from agent_engine.engine.stepping import record_result, run_claimed
from agent_engine.llm.base import ChatMessage
from agent_engine.llm.tokens import estimate_message_tokens
from agent_engine.storage.budget_tables import BudgetCounter, BudgetReservation
from agent_engine.storage.database import read_transaction
from tests.engines import claim_locking
from tests.fakes.llm_servers import FakeLLMServer, ReceivedRequest, Reply, openai_completion

MODEL = "budgetai:meter-1"
# USD per million tokens: a call's cost is (prompt + 2 * max output) / 1e6 dollars.
CATALOG = (
    "providers:\n"
    "  budgetai: {{kind: openai, base_url: '{url}', api_key_env: null, timeout_s: 10}}\n"
    "models:\n"
    "  - {{provider: budgetai, model: meter-1, tier: medium, context_window: 100000,"
    " max_output_tokens: 4096, prices: {{input: 1, output: 2}}}}\n"
)


def worst_case_reply(received: ReceivedRequest) -> Reply:
    """Usage exactly as the router reckons the worst case: the prompt as it counts it, every
    output token the request allows."""
    body = received.body
    messages = [ChatMessage(role=m["role"], content=m["content"]) for m in body["messages"]]
    return openai_completion(
        '{"report": "ok", "findings": []}',
        prompt_tokens=estimate_message_tokens(messages),
        completion_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens")),
        model="meter-1",
    )


def metered_server() -> FakeLLMServer:
    return FakeLLMServer(responder=worst_case_reply)


def metered_settings(settings: Settings, tmp_path: Path, server: FakeLLMServer) -> Settings:
    catalog = tmp_path / "metered.yaml"
    catalog.write_text(CATALOG.format(url=server.openai_base_url), encoding="utf-8")
    return settings.model_copy(update={"models_file": catalog, "model": MODEL})


def parallel_analyses(count: int, instruction: str = "Say ok.") -> list[PlanStep]:
    """``count`` analyze steps with no dependencies: all ready at once."""
    return [
        PlanStep(step_type="analyze", input_data={"instruction": instruction}, depends_on=[])
        for _ in range(count)
    ]


async def fire_at_once(ctx: EngineContext, run_ids: list[uuid.UUID], per_run: int) -> list[Claim]:
    """Claim every ready step of the runs, execute them all concurrently, record each result."""
    claims: list[Claim] = []
    for run_id in run_ids:
        claims.extend(await claim_locking(ctx, run_id, limit=per_run))
    results = await asyncio.gather(*(run_claimed(ctx, claim) for claim in claims))
    for claim, result in zip(claims, results, strict=True):
        assert result is not None
        await record_result(ctx, claim, result, actor="w")
    return claims


async def counters(ctx: EngineContext) -> list[BudgetCounter]:
    async with read_transaction(ctx.sessions) as session:
        return list(await session.scalars(select(BudgetCounter)))


async def reservations(ctx: EngineContext) -> list[BudgetReservation]:
    async with read_transaction(ctx.sessions) as session:
        found = await session.scalars(select(BudgetReservation))
        return sorted(found, key=lambda r: r.created_at)


def peak_commitment(holds: list[BudgetReservation]) -> Decimal:
    """The most ever held plus spent at one instant, replayed from the reservations' own times:
    at each hold's creation, what every earlier hold then held (or had settled to)."""
    peak = Decimal(0)
    for hold in holds:
        moment = hold.created_at
        total = Decimal(0)
        for other in holds:
            if other.created_at > moment:
                continue
            settled = other.settled_at is not None and other.settled_at <= moment
            if not settled:
                total += other.amount_usd
            elif other.status == "settled":
                total += other.actual_usd or Decimal(0)
        peak = max(peak, total)
    return peak


def call_cost(prompt_tokens: int, output_tokens: int) -> Decimal:
    return (Decimal(prompt_tokens) + 2 * Decimal(output_tokens)) / Decimal(1_000_000)


def as_dict(row: Any) -> dict[str, Any]:
    return {column.name: getattr(row, column.key) for column in row.__table__.columns}
