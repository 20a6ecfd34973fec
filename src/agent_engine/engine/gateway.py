"""The engine side of the OpenAI-compatible endpoint: one chat completion for an API key and
project, routed like any model call, held against their budgets before it is sent, and written
to the ``llm_calls`` ledger (``run_id`` NULL, purpose ``gateway``) whatever the outcome.

The request and answer translation is :mod:`agent_engine.router.openai_wire`; budgets are
reserved and settled in :mod:`agent_engine.engine.gateway_budget`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent_engine.domain.clock import utcnow
from agent_engine.engine.context import EngineContext
from agent_engine.engine.gateway_budget import GatewayHold, hold_budget, settle_budget
from agent_engine.engine.ledger import call_row
from agent_engine.llm.base import CompletionResponse, LLMCallRecord
from agent_engine.llm.catalog import cached_catalog
from agent_engine.router.openai_wire import ChatCall, ChatRequestError, parse_chat_request
from agent_engine.storage.ledger import insert_calls

PURPOSE = "gateway"
MAX_PROJECT_CHARS = 200


@dataclass(frozen=True)
class GatewayCaller:
    """Whose budgets a call counts against: the caller's project (``OpenAI-Project``) and key
    (None with authentication off)."""

    project: str | None
    api_key_id: uuid.UUID | None


@dataclass(frozen=True)
class GatewayAnswer:
    """A chat completion answered: the translated request, the answer, the ledger row of the
    call that gave it, and when (seconds since the epoch, as OpenAI's ``created``)."""

    call: ChatCall
    answer: CompletionResponse
    call_id: uuid.UUID
    created: int


def project_of(header: str | None) -> str | None:
    """The project an ``OpenAI-Project`` header names (None when absent or blank)."""
    if header is None or not header.strip():
        return None
    project = header.strip()
    if len(project) > MAX_PROJECT_CHARS or not project.isprintable():
        raise ChatRequestError(
            f"the OpenAI-Project header must be 1–{MAX_PROJECT_CHARS} printable characters",
            param="OpenAI-Project",
        )
    return project


async def answer_chat(ctx: EngineContext, body: Any, caller: GatewayCaller) -> GatewayAnswer:
    """Answer one OpenAI chat completions ``body``: 400 (ChatRequestError) for what it cannot
    honour, BudgetExceededError when the worst case does not fit (nothing is sent), else the
    routed model's answer. Every provider attempt is written to the ledger."""
    settings = ctx.settings
    call = parse_chat_request(
        body,
        cached_catalog(settings.models_file),
        # A router elsewhere holds the provider keys: it decides which models are available.
        check_available=not settings.router_url,
    )
    client = ctx.llm_factory(None)
    worst_case_usd = await client.estimate_cost(call.request)
    hold = await hold_budget(ctx, caller, call.request, worst_case_usd)
    try:
        answer = await client.complete(call.request)
    finally:
        # Shielded: a caller that hangs up mid-call does not erase what the call cost.
        rows = await asyncio.shield(_record(ctx, call, caller, client.calls, hold))
    answering = [row for row in rows if row["error"] is None]
    call_id = answering[-1]["id"] if answering else uuid.uuid4()
    return GatewayAnswer(call, answer, call_id, int(utcnow().timestamp()))


async def _record(
    ctx: EngineContext,
    call: ChatCall,
    caller: GatewayCaller,
    records: Sequence[LLMCallRecord],
    hold: GatewayHold,
) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        row = call_row(
            record,
            run_id=None,
            step_id=None,
            purpose=PURPOSE,
            project=caller.project,
            api_key_id=caller.api_key_id,
        )
        # What the caller asked for beyond the request itself: the model name it gave (the
        # router's choice is in ``routing``), its end-user id and metadata.
        row["request"] = {
            **row["request"],
            "gateway": {"model": call.asked_model, "user": call.user, "metadata": call.metadata},
        }
        rows.append(row)
    await insert_calls(ctx.sessions, rows)
    await settle_budget(ctx, hold, records)
    return rows
