"""Readiness: each thing this process needs to do its work, checked and named.

A process is ready when its database answers at the code's migration head, its LISTEN
connection is open (PostgreSQL: without it other processes' commits arrive only by polling),
and the router answers when it runs as its own service (``AGENT_ENGINE_ROUTER_URL``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from agent_engine.engine.context import EngineContext
from agent_engine.router.client import RouterClient
from agent_engine.storage.migrations import current_revision, head_revision


@dataclass(frozen=True)
class Check:
    """One readiness check: ``ok``, ``failed`` (then ``detail`` says why) or ``skipped``."""

    name: str
    status: str
    detail: str | None = None


@dataclass(frozen=True)
class Readiness:
    """Every check, and what they found about the database."""

    checks: list[Check]
    database: str
    schema_revision: str | None

    @property
    def ready(self) -> bool:
        """No check failed."""
        return all(check.status != "failed" for check in self.checks)


async def check_readiness(ctx: EngineContext) -> Readiness:
    """Run every readiness check (a failed one never stops the others being run)."""
    checks: list[Check] = []
    revision: str | None = None
    try:
        async with ctx.db.connect() as connection:
            await connection.execute(text("SELECT 1"))
        revision = await current_revision(ctx.db)
    except Exception as exc:  # any failure to reach the database means "not ready"
        checks.append(Check("database", "failed", f"database unreachable: {type(exc).__name__}"))
        checks.append(Check("migrations", "skipped", "the database is unreachable"))
    else:
        checks.append(Check("database", "ok"))
        checks.append(_migrations(revision))
    checks.append(_listen(ctx))
    checks.append(await _router(ctx))
    return Readiness(checks, ctx.db.dialect.name, revision)


def _migrations(revision: str | None) -> Check:
    head = head_revision()
    if revision == head:
        return Check("migrations", "ok")
    return Check(
        "migrations",
        "failed",
        f"database schema at {revision!r}, code expects {head!r}; run `agent-engine db upgrade`",
    )


def _listen(ctx: EngineContext) -> Check:
    if ctx.db.dialect.name != "postgresql":
        return Check("listen", "skipped", "SQLite: notifications stay in this process")
    if ctx.notifier.listening:
        return Check("listen", "ok")
    return Check("listen", "failed", "the LISTEN connection is down (being re-opened)")


async def _router(ctx: EngineContext) -> Check:
    url = ctx.settings.router_url
    if not url:
        return Check("router", "skipped", "the router runs in-process")
    problem = await RouterClient(url).ping()
    return Check("router", "ok") if problem is None else Check("router", "failed", problem)
