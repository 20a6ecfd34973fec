"""The mixed workload, through the HTTP API while the faults happen: parallel DAG runs with edits,
commands, model calls and MCP tool calls; runs whose budget is near its limit (the script raises
some and cancels others when they pause); steps that wait for approval (the script approves or
rejects them); forks and replays of completed runs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chaos.client import ChaosClient
from bench.chaos.plans import KINDS, Tracked, build_run, fork_body, prepare_workspace

TERMINAL = frozenset({"completed", "failed", "cancelled"})
TICK_S = 0.5
MAX_OPEN = 8


@dataclass(frozen=True)
class BudgetRoom:
    """What a budget run gets: room for two calls (one worst case plus a call and a half
    actually spent) out of four, and what the script raises it to."""

    limit_usd: str
    raised_usd: str


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(f"{seed}:" + ":".join(str(p) for p in parts))


def waiting_on_unknown(run: dict[str, Any]) -> bool:
    """A run that waits only for a person to decide about effects whose outcome is unknown
    (the script leaves those: re-running one is a human's call, not the engine's)."""
    waiting = [s for s in run.get("steps", []) if s["status"] == "awaiting_approval"]
    return bool(waiting) and all((s.get("preview") or {}).get("outcome_unknown") for s in waiting)


class Workload:
    """Creates runs, plays the person (approvals, budgets) and follows completed runs up."""

    def __init__(self, client: ChaosClient, root: Path, seed: int, room: BudgetRoom) -> None:
        self.client = client
        self.root = root
        self.seed = seed
        self.room = room
        self.tracked: dict[str, Tracked] = {}
        self.counts: Counter[str] = Counter()
        self.statuses: dict[str, str] = {}
        self._numbers = 0

    async def _create(self, kind: str) -> None:
        self._numbers += 1
        number = self._numbers
        rng = _rng(self.seed, "run", number)
        workspace = await asyncio.to_thread(prepare_workspace, self.root, f"ws-{number}")
        body, effects = build_run(kind, number, workspace, rng, self.room.limit_usd)
        headers = {"Idempotency-Key": f"chaos-{self.seed}-{number}-{uuid.uuid4().hex[:8]}"}
        response = await self.client.request("POST", "/v1/agent-runs", json=body, headers=headers)
        run_id = response.json()["id"]
        choice = rng.choice(("raise", "cancel")) if kind == "budget" else None
        self.tracked[run_id] = Tracked(run_id, kind, number, effects, budget_choice=choice)
        self.statuses[run_id] = response.json()["status"]
        self.counts[f"created {kind}"] += 1

    def _open(self) -> int:
        return sum(1 for r, s in self.statuses.items() if s not in TERMINAL)

    async def submit(self, stop: asyncio.Event) -> None:
        """Create runs of random kinds, a few open at a time, until ``stop``."""
        rng = _rng(self.seed, "submit")
        cycle: list[str] = []
        while not stop.is_set():
            if self._open() < MAX_OPEN:
                if not cycle:  # every kind in each round, in a seeded order
                    cycle = rng.sample(KINDS, len(KINDS))
                await self._create(cycle.pop())
            await _sleep_or_stop(stop, rng.uniform(0.3, 1.0))

    async def script(self, stop: asyncio.Event) -> None:
        """Play the person every tick until ``stop``."""
        while not stop.is_set():
            await self.tick()
            await _sleep_or_stop(stop, TICK_S)

    async def tick(self) -> None:
        """Read every run's status; decide waiting steps; follow completed runs up."""
        for item in await self.client.all_runs():
            if item["id"] in self.tracked:
                self.statuses[item["id"]] = item["status"]
        for run_id, status in list(self.statuses.items()):
            tracked = self.tracked[run_id]
            if status == "awaiting_approval":
                await self._decide(tracked, await self.client.run(run_id))
            elif status == "completed" and not tracked.followed_up:
                tracked.followed_up = True
                await self._follow_up(tracked)

    async def _decide(self, tracked: Tracked, run: dict[str, Any]) -> None:
        for step in run["steps"]:
            key = f"{step['id']}:{step['attempt']}"
            if step["status"] != "awaiting_approval" or key in tracked.decided:
                continue
            path = f"/v1/agent-runs/{tracked.run_id}"
            if step.get("budget_pause"):
                if tracked.budget_choice == "raise":
                    body = {"budget_usd": self.room.raised_usd, "reason": "chaos script"}
                    await self.client.request("PATCH", f"{path}/budget", json=body)
                    self.counts["budgets raised"] += 1
                else:
                    await self.client.request("POST", f"{path}/cancel", accept=frozenset({409}))
                    self.counts["budget runs cancelled"] += 1
                tracked.decided[key] = tracked.budget_choice or "raise"
                return  # one decision covers every step paused for the run's budget
            if (step.get("preview") or {}).get("outcome_unknown"):
                tracked.decided[key] = "left waiting"
                self.counts["left waiting (outcome unknown)"] += 1
                continue
            approve = _rng(self.seed, "decide", tracked.number, step["step_number"]).random() < 0.7
            verb, body = ("approve", {"comment": "ok"}) if approve else ("reject", {"reason": "no"})
            await self.client.request(
                "POST", f"{path}/steps/{step['id']}/{verb}", json=body, accept=frozenset({409})
            )
            tracked.decided[key] = verb
            self.counts["approved" if approve else "rejected"] += 1

    async def _follow_up(self, tracked: Tracked) -> None:
        if tracked.kind in {"fork", "replay"}:
            return
        roll = _rng(self.seed, "follow", tracked.number).random()
        if tracked.kind == "dag" and roll < 0.4:
            await self._child(tracked, "fork", fork_body(tracked.number))
        elif roll > 0.7:
            await self._child(tracked, "replay", {"mode": "verify"})

    async def _child(self, parent: Tracked, kind: str, body: dict[str, Any]) -> str:
        response = await self.client.request(
            "POST", f"/v1/agent-runs/{parent.run_id}/{kind}", json=body
        )
        run_id: str = response.json()["id"]
        self._numbers += 1
        self.tracked[run_id] = Tracked(run_id, kind, self._numbers, parent=parent.run_id)
        self.statuses[run_id] = response.json()["status"]
        self.counts[f"created {kind}"] += 1
        return run_id

    async def settle(self, limit_s: float) -> list[str]:
        """Keep playing the person until every run is finished or waits on an unknown outcome;
        the ids still moving after ``limit_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while True:
            await self.tick()
            moving = [
                run_id
                for run_id, status in self.statuses.items()
                if status not in TERMINAL
                and not (
                    status == "awaiting_approval"
                    and waiting_on_unknown(await self.client.run(run_id))
                )
            ]
            if not moving or loop.time() > deadline:
                return moving
            await asyncio.sleep(TICK_S)

    async def replay_completed(self) -> list[str]:
        """A verify-mode replay of every completed run that has none yet; their ids."""
        replayed = {t.parent for t in self.tracked.values() if t.kind == "replay"}
        started = []
        for tracked in list(self.tracked.values()):
            done = self.statuses.get(tracked.run_id) == "completed"
            if done and tracked.kind != "replay" and tracked.run_id not in replayed:
                tracked.followed_up = True
                started.append(await self._child(tracked, "replay", {"mode": "verify"}))
        return started


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
