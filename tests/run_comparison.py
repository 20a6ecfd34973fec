"""Running one plan two ways and comparing what was stored: the end state of a run and its steps
without ids, times and actors, and each step's audit history."""

from __future__ import annotations

from typing import Any

from agent_engine.domain.plan import PlanStep
from agent_engine.domain.retry import RetryPolicy
from agent_engine.engine.approvals import decide_step
from agent_engine.engine.context import EngineContext
from agent_engine.storage.audit import verify_chain
from agent_engine.worker.known_runs import KnownRuns
from agent_engine.worker.worker import Worker
from tests.engines import chain_of, new_run, noop, running_worker, snapshot, wait_until

NOOP_DEFAULTS = {"fail": False, "fail_attempts": 0, "sleep_s": 0.0}


def equivalence_plan() -> list[PlanStep]:
    """A chain, a fan-out/fan-in with a retried branch, a reference, an optional failure, and a
    step that waits for a human's approval."""
    retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.0, max_backoff_s=0.0)
    return [
        noop("first"),  # 1
        noop({"n": 2, "nested": [1, 2]}),  # 2 (after 1)
        noop("left", depends_on=[2]),  # 3
        noop("right", depends_on=[2]),  # 4
        noop("flaky", depends_on=[2], fail_attempts=2, retry_policy=retry),  # 5: 3 attempts
        noop("join", depends_on=[3, 4, 5]),  # 6
        noop({"$ref": "steps.4.output.value"}),  # 7: resolving reads a stored output
        noop("broken", optional=True, fail=True),  # 8: fails for good, optional
        noop("joined", depends_on=[7, 8]),  # 9
        noop("approved", requires_approval=True),  # 10: parked with a preview, then approved
        noop("last"),  # 11
    ]


STEP_STATE = (
    "step_number",
    "step_type",
    "status",
    "input_data",
    "resolved_input",
    "output_data",
    "output_hash",
    "preview",
    "attempt",
    "max_attempts",
    "fence",
    "error",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "model",
    "lease_owner",
    "lease_expires_at",
    "not_before",
    "effect_intent",
    "effect_outcome",
    "outcome_unknown",
)
RUN_STATE = (
    "status",
    "error",
    "total_cost_usd",
    "input_tokens",
    "output_tokens",
    "claimable_at",
    "audit_seq",
    "plan_version",
    "started",
)


def end_state(snap: dict[str, Any]) -> dict[str, Any]:
    """The run and steps without ids, times and actors (which differ between two runs)."""
    run = {key: snap["run"][key] for key in RUN_STATE}
    run["completed"] = snap["run"]["completed_at"] is not None
    steps = []
    for row in snap["steps"]:
        step = {key: row[key] for key in STEP_STATE}
        step["started"] = row["started_at"] is not None
        step["finished"] = row["completed_at"] is not None
        step["timed"] = row["latency_ms"] is not None
        steps.append(step)
    return {"run": run, "steps": steps}


def comparable_events(snap: dict[str, Any], worker_id: str) -> list[tuple[Any, ...]]:
    """(seq, type, step number, payload) with ids and the worker's name replaced by placeholders;
    timestamps, actors and hashes are left out."""
    numbers = {row["id"]: row["step_number"] for row in snap["steps"]}
    names = {str(snap["run"]["id"]): "<run>", worker_id: "<worker>"}
    names.update({str(step_id): f"<step {n}>" for step_id, n in numbers.items()})

    def normal(value: Any) -> Any:
        if isinstance(value, dict):
            # Rows an event names (an approval, an LLM call) have ids of their own run's making.
            return {key: "<id>" if key == "id" else normal(item) for key, item in value.items()}
        if isinstance(value, list):
            return [normal(item) for item in value]
        if isinstance(value, str):
            return names.get(value, value)
        return value

    return [
        (row["seq"], row["type"], numbers.get(row["step_id"]), normal(row["payload"]))
        for row in snap["events"]
    ]


def per_step(events: list[tuple[Any, ...]]) -> dict[Any, list[tuple[Any, ...]]]:
    """Each step's events in order (and the run's own), without the global seq."""
    grouped: dict[Any, list[tuple[Any, ...]]] = {}
    for _seq, type, number, payload in events:
        grouped.setdefault(number, []).append((type, payload))
    return grouped


async def _idle(worker: Worker) -> bool:
    return worker.inflight == 0


async def execute_plan(
    ctx: EngineContext, worker_id: str, known: KnownRuns, concurrency: int
) -> tuple[dict[str, Any], Worker]:
    """Run the equivalence plan with one worker (a human approves step 10); the end state and
    the worker. The plan must have done what it was meant to."""
    async with running_worker(ctx, worker_id, concurrency=concurrency, known=known) as worker:
        run_id = await new_run(ctx, equivalence_plan(), goal="equivalence", auto_start=True)

        async def awaits_approval() -> bool:
            status: str = (await snapshot(ctx, run_id))["run"]["status"]
            return status == "awaiting_approval"

        await wait_until(awaits_approval)
        step_10 = (await snapshot(ctx, run_id))["steps"][9]
        assert step_10["status"] == "awaiting_approval"
        await decide_step(
            ctx, str(run_id), str(step_10["id"]), decision="approved", actor="human", comment="ok"
        )

        async def finished() -> bool:
            return (await snapshot(ctx, run_id))["run"]["status"] == "completed"

        await wait_until(finished)
        await wait_until(lambda: _idle(worker))
    assert verify_chain(await chain_of(ctx, run_id)) == (True, None), worker_id
    snap = await snapshot(ctx, run_id)
    steps = end_state(snap)["steps"]
    assert [s["status"] for s in steps] == ["completed"] * 7 + ["failed"] + ["completed"] * 3
    assert [s["attempt"] for s in steps] == [1, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1]
    assert steps[6]["output_data"] == {"value": "right", "attempt": 1}
    assert steps[9]["preview"] == {"input": {"value": "approved", **NOOP_DEFAULTS}}
    return snap, worker


def same_history(hot: dict[str, Any], locking: dict[str, Any], concurrency: int) -> None:
    """The two runs' audit logs agree: wholly with one slot, step by step in parallel."""
    hot_events = comparable_events(hot, "hot-worker")
    locking_events = comparable_events(locking, "locking-worker")
    if concurrency == 1:
        # One slot: the order of everything is fixed, so the whole logs must be equal.
        assert hot_events == locking_events
        return
    # Parallel branches finish in any order: each step's (and the run's) history is equal.
    assert len(hot_events) == len(locking_events)
    assert per_step(hot_events) == per_step(locking_events)
    for events in (hot_events, locking_events):
        # Steps 3, 4 and 5 were all claimed before any of them finished: they ran in parallel.
        kinds = [(kind, number) for _seq, kind, number, _payload in events]
        last_start = max(kinds.index(("step.running", n)) for n in (3, 4, 5))
        first_end = min(
            i for i, (kind, n) in enumerate(kinds) if n in (3, 4, 5) and kind != "step.running"
        )
        assert last_start < first_end


def each_step_recorded_once(snap: dict[str, Any], events: list[Any]) -> None:
    """Every step completed in its first attempt, with one start and one completion in an intact
    audit chain, in order."""
    steps = snap["steps"]
    assert [(s["status"], s["attempt"]) for s in steps] == [("completed", 1)] * len(steps)
    assert verify_chain(events) == (True, None)
    per_step_events = [
        (e.type, e.payload["step_number"]) for e in events if e.type.startswith("step.")
    ]
    assert per_step_events == [
        (kind, number)
        for number in range(1, len(steps) + 1)
        for kind in ("step.running", "step.completed")
    ]
