"""A run's family: the tree of replays and forks rooted at the original it descends from."""

from __future__ import annotations

import uuid
from typing import Any

from agent_engine.engine.context import EngineContext
from agent_engine.errors import NotFoundError
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import derived_runs_txn, get_run_txn
from agent_engine.storage.tables import AgentRun

# A family larger than this is cut (the answer says so); generations are walked breadth first.
MAX_FAMILY = 1000
MAX_GENERATIONS = 100


def _parent(run: AgentRun) -> uuid.UUID | None:
    return run.replay_of or run.forked_from


def _node(run: AgentRun) -> dict[str, Any]:
    kind = "replay" if run.replay_of else "fork" if run.forked_from else "original"
    return {
        "id": run.id,
        "status": run.status,
        "kind": kind,
        "from_step": run.from_step,
        "replay_mode": run.replay_mode,
        "created_at": run.created_at,
        "children": [],
    }


async def family_tree(ctx: EngineContext, run_id: str) -> dict[str, Any]:
    """The tree of replays and forks of the original run ``run_id`` descends from (each node:
    id, status, kind ``original|replay|fork``, from_step, created_at, children)."""
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        root = run
        for _ in range(MAX_GENERATIONS):
            parent = _parent(root)
            if parent is None:
                break
            try:
                root = await get_run_txn(session, parent)
            except NotFoundError:
                break  # the original is on another instance: the eldest run here is the root
        nodes = {root.id: _node(root)}
        generation = [root.id]
        truncated = False
        while generation and not truncated:
            room = MAX_FAMILY - len(nodes)
            children = await derived_runs_txn(session, generation, room + 1)
            truncated = len(children) > room
            generation = []
            for child in children[:room]:
                if child.id in nodes:
                    continue
                nodes[child.id] = _node(child)
                parent = _parent(child)
                assert parent is not None
                nodes[parent]["children"].append(nodes[child.id])
                generation.append(child.id)
    return {"run_id": run.id, "root": nodes[root.id], "size": len(nodes), "truncated": truncated}
