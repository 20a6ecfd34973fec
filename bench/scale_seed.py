"""Rows for the scale measurement, and the plans PostgreSQL chooses for the list queries.

Seeded runs are written by SQL (``generate_series``), not through the engine: 100,000 runs through
the API would take minutes and measure creation, not listing. They have every column a list
reads, in the proportions of a working instance: mostly completed, some failed, cancelled and
waiting, twenty projects, created over ninety days. They have no steps or audit events (a list
reads neither).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_engine.engine.context import EngineContext

# One in ten waits for a person, one in twenty failed, one in twenty was cancelled.
_STATUS_CYCLE = ["completed"] * 16 + ["awaiting_approval"] * 2 + ["failed", "cancelled"]
PROJECTS = 20
SEED_BATCH = 10_000

_SEED_SQL = text(
    """
    INSERT INTO agent_runs (
        id, goal, status, plan_version, total_cost_usd, input_tokens, output_tokens,
        created_by, metadata, options, started, max_parallel, audit_seq, version,
        created_at, updated_at, completed_at, project)
    SELECT gen_random_uuid(),
           'seeded run ' || g || ': analyze module ' || (g % 997),
           (CAST(:statuses AS text[]))[1 + g % :cycle],
           1, 0.001200000, 300, 200, 'bench', '{}', '{}', true, 4, 3, 1,
           now() - make_interval(secs => (g * 77.0) % (90 * 86400)),
           now(), now(), 'project-' || (g % :projects)
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
    """
)


async def seed_runs(db: AsyncEngine, first: int, last: int) -> None:
    """Insert seeded runs numbered ``first`` … ``last`` in batches (one transaction each)."""
    for start in range(first, last + 1, SEED_BATCH):
        end = min(start + SEED_BATCH - 1, last)
        async with db.begin() as connection:
            await connection.execute(
                _SEED_SQL,
                {
                    "statuses": _STATUS_CYCLE,
                    "cycle": len(_STATUS_CYCLE),
                    "projects": PROJECTS,
                    "first": start,
                    "last": end,
                },
            )
    async with db.begin() as connection:
        await connection.execute(text("ANALYZE agent_runs"))


async def explain(ctx: EngineContext, read: Callable[[EngineContext], Awaitable[Any]]) -> list[str]:
    """The plan of every statement ``read`` issues, as PostgreSQL ran it (EXPLAIN ANALYZE),
    one line per plan node."""
    issued: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            issued.append((statement, parameters))

    sync_engine = ctx.db.sync_engine
    event.listen(sync_engine, "before_cursor_execute", note)
    try:
        await read(ctx)
    finally:
        event.remove(sync_engine, "before_cursor_execute", note)
    plans: list[str] = []
    async with ctx.db.connect() as connection:
        for statement, parameters in issued:
            result = await connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + statement,
                tuple(parameters),
            )
            plans.extend(_node(row[0]) for row in result if _is_node(row[0]))
    return plans


def _is_node(line: str) -> bool:
    stripped = line.strip()
    return stripped.startswith("->") or not line.startswith(" ")


def _node(line: str) -> str:
    depth = (len(line) - len(line.lstrip())) // 6
    return "  " * depth + line.strip().removeprefix("-> ").split("  (actual")[0]
