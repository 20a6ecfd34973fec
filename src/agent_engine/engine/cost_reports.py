"""``GET /v1/costs``: totals of the ledger grouped by day, model, step type, project and key,
as JSON rows or CSV (``storage/cost_reports.py`` groups in SQL)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from agent_engine.engine.context import EngineContext
from agent_engine.errors import InputValidationError
from agent_engine.storage.cost_reports import (
    COUNT_FIELDS,
    GROUPINGS,
    MONEY_FIELDS,
    CostQuery,
    Grouping,
    cost_totals_txn,
)
from agent_engine.storage.database import read_transaction

MAX_PROJECT_CHARS = 200


def cost_query(
    group_by: Sequence[str],
    since: date | None = None,
    until: date | None = None,
    project: str | None = None,
) -> CostQuery:
    """The query the parameters ask for (``group_by`` values may also be comma-separated);
    InputValidationError (422) naming what is wrong otherwise."""
    names: list[Grouping] = []
    for value in group_by:
        for name in (part.strip() for part in value.split(",")):
            if name not in GROUPINGS:
                raise InputValidationError(
                    f"group_by: unknown grouping '{name}' (one of: {', '.join(GROUPINGS)})",
                    errors=[{"field": "group_by", "message": f"unknown grouping '{name}'"}],
                )
            grouping: Grouping = name
            if grouping not in names:
                names.append(grouping)
    if since is not None and until is not None and since > until:
        raise InputValidationError(
            f"since ({since}) is after until ({until})",
            errors=[{"field": "since", "message": "after until"}],
        )
    if project is not None and not 1 <= len(project) <= MAX_PROJECT_CHARS:
        raise InputValidationError(f"project: 1 to {MAX_PROJECT_CHARS} characters")
    return CostQuery(tuple(names), since, until, project)


async def cost_report(ctx: EngineContext, query: CostQuery) -> dict[str, Any]:
    """The groups' totals, in the groups' order, and the totals of all of them."""
    async with read_transaction(ctx.sessions) as session:
        rows = await cost_totals_txn(session, query)
    totals: dict[str, Any] = {name: 0 for name in COUNT_FIELDS}
    totals.update({name: Decimal(0) for name in MONEY_FIELDS})
    for row in rows:
        for name in (*COUNT_FIELDS, *MONEY_FIELDS):
            totals[name] += row[name]
    return {
        "group_by": list(query.group_by),
        "since": query.since.isoformat() if query.since else None,
        "until": query.until.isoformat() if query.until else None,
        "project": query.project,
        "rows": rows,
        "totals": totals,
    }


def report_csv(report: dict[str, Any]) -> str:
    """The report's rows as CSV: a header row, then one row per group (money as fixed-point)."""
    columns = [*report["group_by"], *COUNT_FIELDS, *MONEY_FIELDS]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in report["rows"]:
        writer.writerow([_cell(row[name]) for name in columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return format(value, "f") if isinstance(value, Decimal) else str(value)
