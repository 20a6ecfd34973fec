"""The engine side of the OpenAI-compatible endpoint: one chat completion for an API key and
project, routed like any model call, held against their budgets before it is sent, and written
to the ``llm_calls`` ledger (``run_id`` NULL, purpose ``gateway``) whatever the outcome.

The request and answer translation is :mod:`agent_engine.router.openai_wire`; the budgets
are held and settled by the same wrapper as a step's calls (:mod:`agent_engine.llm.budgeted`).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent_engine.domain.budget_math import BudgetSubject
from agent_engine.domain.clock import utcnow
from agent_engine.engine.budget_gate import RunBudgetGate
from agent_engine.engine.context import EngineContext
from agent_engine.engine.ledger import call_row
from agent_engine.engine.run_requests import PROJECT_NAME_PATTERN
from agent_engine.llm.base import CompletionResponse, LLMCallRecord, LLMClient
from agent_engine.llm.budgeted import BudgetedLLMClient
from agent_engine.llm.catalog import cached_catalog
from agent_engine.router.openai_wire import ChatCall, ChatRequestError, parse_chat_request
from agent_engine.storage.ledger import insert_calls

PURPOSE = "gateway"
FINISH_GRACE_S = 30.0
_PROJECT_NAME = re.compile(PROJECT_NAME_PATTERN)


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
    """The project an ``OpenAI-Project`` header names (None when absent or blank), by the same
    rule as a run's ``project``."""
    if header is None or not header.strip():
        return None
    project = header.strip()
    if _PROJECT_NAME.fullmatch(project) is None:
        raise ChatRequestError(
            "the OpenAI-Project header must be 1–200 letters, digits and . _ - "
            "(starting with a letter or digit)",
            param="OpenAI-Project",
        )
    return project


def gateway_client(ctx: EngineContext, caller: GatewayCaller) -> LLMClient:
    """The routed client of one gateway call, held to the caller's project and key budgets
    when either may apply."""
    client = ctx.llm_factory(None)
    subject = BudgetSubject(
        run_id=None,
        run_budget_usd=None,
        run_budget_tokens=None,
        project=caller.project,
        api_key_id=caller.api_key_id,
    )
    if not subject.may_apply:
        return client
    return BudgetedLLMClient(client, RunBudgetGate(ctx, subject, purpose=PURPOSE))


async def answer_chat(ctx: EngineContext, body: Any, caller: GatewayCaller) -> GatewayAnswer:
    """Answer one OpenAI chat completions ``body``: 400 (ChatRequestError) for what it cannot
    honour, BudgetExceededError when its worst case does not fit the project's or key's budget
    (nothing is sent), else the routed model's answer. Every provider attempt is written to the
    ledger, also when the call fails or the caller goes away."""
    settings = ctx.settings
    call = parse_chat_request(
        body,
        cached_catalog(settings.models_file),
        # A router elsewhere holds the provider keys: it decides which models are available.
        check_available=not settings.router_url,
    )
    client = gateway_client(ctx, caller)
    task = asyncio.ensure_future(client.complete(call.request))
    try:
        answer = await asyncio.shield(task)
    except asyncio.CancelledError:
        # The caller hung up, but the request may already be billed: let the call finish (up
        # to the grace) so that what it cost is written, then go on being cancelled.
        await asyncio.wait({task}, timeout=FINISH_GRACE_S)
        raise
    finally:
        if not task.done():
            task.cancel()
        rows = await asyncio.shield(_record(ctx, call, caller, client.calls))
    answering = [row for row in rows if row["error"] is None]
    call_id = answering[-1]["id"] if answering else uuid.uuid4()
    return GatewayAnswer(call, answer, call_id, int(utcnow().timestamp()))


async def _record(
    ctx: EngineContext,
    call: ChatCall,
    caller: GatewayCaller,
    records: Sequence[LLMCallRecord],
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
    await insert_calls(ctx.sessions, rows, ctx.settings.blob_threshold_bytes)
    return rows
