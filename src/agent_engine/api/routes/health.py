"""Liveness and readiness."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from agent_engine import __version__
from agent_engine.api.access import public
from agent_engine.api.deps import Engine
from agent_engine.api.openapi_responses import problem_responses
from agent_engine.api.problems import problem_response
from agent_engine.api.schemas import Health, Readiness, ReadinessCheck
from agent_engine.engine.readiness import check_readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, **public())
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok", version=__version__)


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503), **public())
async def readyz(engine: Engine) -> Readiness | JSONResponse:
    """Every check this process needs passes: the database answers, its schema is at the code's
    migration head, the LISTEN connection is open (PostgreSQL) and the router answers (when it
    is its own service). A 503 problem names each failed check; ``checks`` lists them all."""
    found = await check_readiness(engine)
    checks = [ReadinessCheck(**asdict(check)) for check in found.checks]
    if not found.ready:
        failed = [check for check in found.checks if check.status == "failed"]
        return problem_response(
            503,
            "not_ready",
            "Not ready",
            "; ".join(f"{check.name}: {check.detail}" for check in failed),
            checks=[check.model_dump() for check in checks],
        )
    return Readiness(
        status="ready",
        version=__version__,
        database=found.database,
        schema_revision=found.schema_revision,
        checks=checks,
    )
