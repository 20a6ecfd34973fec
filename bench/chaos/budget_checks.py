"""The money invariants, from SQL on the private database: a run's totals are the sums of its
calls in the ledger; no run budget was ever passed, by the ledger's spend, by its counter, and at
every moment a hold was written (what was then held or spent against the limit then in force).

Times come from the database's own clock (``chaos_hold_log``, written by a trigger the harness
installs): the rows' ``created_at`` is the writer's clock, taken before its statement ran. A hold
counts its worst case from its insert until it settled or was released, then what it spent.

A hold released while its call went on (its step's lease lapsed: the worker was paused, or cut
off from the database longer than the lease, and another worker took the step over) is counted
apart: the engine released it on purpose, as it must for a worker that is gone, and what that
call spent is still in the ledger and checked against the limit."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from bench.chaos.checks import Anomaly

TOTALS = """
SELECT r.id::text AS run_id, r.total_cost_usd, r.input_tokens, r.output_tokens,
       coalesce(sum(c.cost_usd), 0) AS calls_usd, coalesce(sum(c.input_tokens), 0) AS calls_in,
       coalesce(sum(c.output_tokens), 0) AS calls_out
FROM agent_runs r LEFT JOIN llm_calls c ON c.run_id = r.id
GROUP BY r.id
"""
COUNTERS = """
SELECT id::text AS id, subject, limit_usd, spent_usd, reserved_usd
FROM budget_counters WHERE scope = 'run' AND limit_usd IS NOT NULL
"""
HOLDS = """
SELECT r.id::text AS id, r.counter_ids, r.step_id::text AS step_id, r.attempt, r.fence,
       r.amount_usd, r.actual_usd,
       array_agg(l.status ORDER BY l.at) AS statuses, array_agg(l.at ORDER BY l.at) AS times
FROM budget_reservations r JOIN chaos_hold_log l ON l.reservation_id = r.id
GROUP BY r.id
"""
RAISES = """
SELECT run_id::text AS run_id, created_at, payload FROM audit_events
WHERE type = 'budget.changed' ORDER BY created_at
"""


@dataclass(frozen=True)
class Hold:
    """One reservation's life by the database's clock."""

    row: Any
    start: datetime
    end: datetime | None  # settled or released (whichever came first); None: still held
    settled: bool
    released_live: bool  # released, then settled by its own call

    @classmethod
    def of(cls, row: Any) -> Hold:
        life = list(zip(row["statuses"], row["times"], strict=True))
        settled_at = next((at for status, at in life if status == "settled"), None)
        released_at = next((at for status, at in life if status == "released"), None)
        live = released_at is not None and settled_at is not None and settled_at > released_at
        return cls(row, life[0][1], released_at or settled_at, settled_at is not None, live)

    def committed_at(self, moment: datetime) -> Decimal:
        if self.start > moment:
            return Decimal(0)
        if self.end is None or self.end > moment:
            return Decimal(self.row["amount_usd"])
        return Decimal(self.row["actual_usd"] or 0) if self.settled else Decimal(0)

    def describe(self) -> str:
        end = f"{self.end:%H:%M:%S.%f}" if self.end else "held"
        return (
            f"step {str(self.row['step_id'])[:8]} attempt {self.row['attempt']} fence"
            f" {self.row['fence']} {self.row['amount_usd']} {self.start:%H:%M:%S.%f}-{end}"
            f" {'>'.join(self.row['statuses'])}"
        )


def _peak_over_limit(holds: list[Hold], limit_at: Any) -> str | None:
    """At the first hold's write where the holds and spend then exceeded the limit: what."""
    for hold in holds:
        total = sum((other.committed_at(hold.start) for other in holds), Decimal(0))
        limit = limit_at(hold.start)
        if limit is not None and total > limit:
            counted = "; ".join(h.describe() for h in holds if h.start <= hold.start)
            return f"{total} committed at {hold.start:%H:%M:%S.%f}, limit {limit} ({counted})"
    return None


async def _read(dsn: str) -> dict[str, list[Any]]:
    connection = await asyncpg.connect(dsn)
    try:
        for name in ("json", "jsonb"):
            await connection.set_type_codec(
                name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
        queries = {"totals": TOTALS, "counters": COUNTERS, "holds": HOLDS, "raises": RAISES}
        return {name: list(await connection.fetch(sql)) for name, sql in queries.items()}
    finally:
        await connection.close()


def _limit_at(original: Decimal, changes: list[Any]) -> Any:
    def limit_at(moment: datetime) -> Decimal | None:
        limit: Decimal | None = original
        for change in changes:
            if change["created_at"] <= moment:
                after = change["payload"].get("after", {}).get("budget_usd")
                limit = Decimal(after) if after is not None else None
        return limit

    return limit_at


async def check_money(dsn: str, original_limit: Decimal) -> tuple[list[Anomaly], Counter[str]]:
    """Totals against the ledger, and every run budget against its holds and its spend."""
    rows = await _read(dsn)
    found = []
    for row in rows["totals"]:
        mine = (row["total_cost_usd"], row["input_tokens"], row["output_tokens"])
        theirs = (row["calls_usd"], row["calls_in"], row["calls_out"])
        if mine != theirs:
            found.append(Anomaly("run total != sum of calls", row["run_id"], f"{mine} vs {theirs}"))
    spent = {row["run_id"]: Decimal(row["calls_usd"]) for row in rows["totals"]}
    holds = [Hold.of(row) for row in rows["holds"]]
    for counter in rows["counters"]:
        run_id, limit = counter["subject"], Decimal(counter["limit_usd"])
        changes = [r for r in rows["raises"] if r["run_id"] == run_id]
        its = sorted((h for h in holds if counter["id"] in h.row["counter_ids"]), key=_start)
        over = _peak_over_limit(its, _limit_at(original_limit, changes))
        if over:
            found.append(Anomaly("budget passed (holds)", run_id, over))
        if spent.get(run_id, Decimal(0)) > limit:
            found.append(Anomaly("budget passed (ledger)", run_id, f"{spent[run_id]} > {limit}"))
        if counter["spent_usd"] + counter["reserved_usd"] > limit:
            detail = f"spent {counter['spent_usd']} + reserved {counter['reserved_usd']}"
            found.append(Anomaly("budget counter over limit", run_id, detail))
    figures = Counter(
        {
            "budgeted runs": len(rows["counters"]),
            "holds": len(holds),
            "holds released, their call still going (lease lapsed)": sum(
                h.released_live for h in holds
            ),
        }
    )
    return found, figures


def _start(hold: Hold) -> datetime:
    return hold.start
