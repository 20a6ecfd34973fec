"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from agent_engine import __version__
from agent_engine.api.access import public
from agent_engine.api.deps import Engine
from agent_engine.api.openapi_responses import problem_responses
from agent_engine.api.problems import problem_response
from agent_engine.api.schemas import Health
from agent_engine.storage.migrations import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, **public())
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok", version=__version__)


@router.get("/readyz", response_model=Health, responses=problem_responses(503), **public())
async def readyz(engine: Engine) -> Health | JSONResponse:
    """The database answers and its schema is at the code's migration head."""
    try:
        async with engine.db.connect() as connection:
            await connection.execute(text("SELECT 1"))
        revision = await current_revision(engine.db)
    except Exception as exc:  # any failure to reach the database means "not ready"
        return problem_response(
            503, "not_ready", "Not ready", f"database unreachable: {type(exc).__name__}"
        )
    if revision != head_revision():
        return problem_response(
            503,
            "not_ready",
            "Not ready",
            f"database schema at {revision!r}, code expects {head_revision()!r}; "
            "run `agent-engine db upgrade`",
        )
    return Health(
        status="ready",
        version=__version__,
        database=engine.db.dialect.name,
        schema_revision=revision,
    )
