"""What a person looking at runs needs in one read: a filtered page of runs with their
families, one run's whole story, and everything waiting for a person across runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_engine.domain.records import RunRecord, StepRecord
from agent_engine.domain.states import RunStatus, StepStatus
from agent_engine.engine.context import EngineContext
from agent_engine.engine.runs import decode_cursor, encode_cursor
from agent_engine.engine.settle import plan_awaits_approval
from agent_engine.storage.database import read_transaction
from agent_engine.storage.run_reads import (
    approvals_txn,
    calls_with_documents_txn,
    plan_versions_txn,
    waiting_runs_txn,
)
from agent_engine.storage.runs import (
    derived_runs_txn,
    list_runs_txn,
    load_open_steps_of_runs_txn,
    load_run_txn,
    load_steps_txn,
)
from agent_engine.storage.tables import AgentRun, Approval, PlanVersion

# A page's families are shown in brief: more members than this are counted, not listed.
FAMILY_SHOWN = 200
MAX_WAITING = 500


@dataclass(frozen=True)
class RunsPage:
    """A page of runs, newest first, with the replays and forks of each (by parent id)."""

    runs: Sequence[RunRecord]
    next_cursor: str | None
    derived: dict[uuid.UUID, list[AgentRun]]


async def runs_page(
    ctx: EngineContext,
    *,
    statuses: Sequence[RunStatus],
    project: str | None,
    search: str | None,
    cursor: str | None,
    limit: int,
) -> RunsPage:
    """One page of runs matching the filters (status, project, goal text) and their children."""
    after = decode_cursor(cursor) if cursor else None
    async with read_transaction(ctx.sessions) as session:
        rows = await list_runs_txn(
            session,
            statuses=[s.value for s in statuses],
            after=after,
            limit=limit + 1,
            project=project,
            goal_contains=search,
        )
        page = rows[:limit]
        children = await derived_runs_txn(session, [r.id for r in page], FAMILY_SHOWN)
    derived: dict[uuid.UUID, list[AgentRun]] = {}
    for child in children:
        parent = child.replay_of or child.forked_from
        if parent is not None:
            derived.setdefault(parent, []).append(child)
    next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
    return RunsPage(page, next_cursor, derived)


@dataclass(frozen=True)
class RunStory:
    """A run, its steps, its model calls (by step id; None: the planner's and others), its
    decisions and its plan versions."""

    run: RunRecord
    steps: list[StepRecord]
    calls: dict[uuid.UUID | None, list[dict[str, Any]]]
    approvals: Sequence[Approval]
    plans: Sequence[PlanVersion]


async def run_story(ctx: EngineContext, run_id: str) -> RunStory:
    """Everything recorded about one run, read in one transaction (NotFoundError if none)."""
    async with read_transaction(ctx.sessions) as session:
        run = await load_run_txn(session, run_id)
        steps = await load_steps_txn(session, run.id)
        calls = await calls_with_documents_txn(session, run.id)
        approvals = await approvals_txn(session, run.id)
        plans = await plan_versions_txn(session, run.id)
    by_step: dict[uuid.UUID | None, list[dict[str, Any]]] = {}
    for call in calls:
        by_step.setdefault(call["step_id"], []).append(call)
    return RunStory(run, steps, by_step, approvals, plans)


@dataclass(frozen=True)
class Waiting:
    """One thing a person must decide: a step (or the run's plan, or its planning budget)."""

    run: RunRecord
    step: StepRecord | None
    reason: str  # plan_approval | budget | outcome_unknown | policy_rule | approval_required
    detail: dict[str, Any] = field(default_factory=dict)


def waiting_reason(run: RunRecord, step: StepRecord | None) -> tuple[str, dict[str, Any]]:
    """Why ``step`` (or, when None, ``run`` itself) waits for a person, and the figures."""
    if step is None:
        if run.budget_pause is not None:
            return "budget", dict(run.budget_pause)
        return "plan_approval", {"plan_version": run.plan_version}
    if step.budget_pause is not None:
        return "budget", dict(step.budget_pause)
    if step.outcome_unknown:
        return "outcome_unknown", {"effect_intent": step.effect_intent}
    if step.approval_rule:
        return "policy_rule", {"rule": step.approval_rule}
    return "approval_required", {}


async def waiting_for_people(ctx: EngineContext) -> list[Waiting]:
    """Every step and plan waiting for a person, across runs, the longest waiting run first."""
    async with read_transaction(ctx.sessions) as session:
        runs = await waiting_runs_txn(session, MAX_WAITING)
        open_steps = await load_open_steps_of_runs_txn(session, [r.id for r in runs])
    items: list[Waiting] = []
    for run in runs:
        steps = [s for s in open_steps[run.id] if s.status == StepStatus.AWAITING_APPROVAL]
        if run.budget_pause is not None or (not steps and plan_awaits_approval(run)):
            reason, detail = waiting_reason(run, None)
            items.append(Waiting(run, None, reason, detail))
        for step in steps:
            reason, detail = waiting_reason(run, step)
            items.append(Waiting(run, step, reason, detail))
    return items


def _subfolders(roots: Sequence[Path]) -> list[str]:
    found: list[str] = []
    for root in roots:
        try:
            entries = sorted(root.iterdir())
        except OSError:
            continue  # a root that is missing or unreadable offers nothing
        found.extend(
            str(entry)
            for entry in entries
            if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(".")
        )
    return found


async def workspace_choices(ctx: EngineContext) -> list[str]:
    """The folders directly inside the allowed workspace roots (where a run may work)."""
    return await asyncio.to_thread(_subfolders, list(ctx.settings.workspace_roots))
