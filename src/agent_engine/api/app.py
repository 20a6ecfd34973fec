"""The API application: factory, lifespan (migrations, engine context) and middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agent_engine import __version__
from agent_engine.api.access import check_declared_roles
from agent_engine.api.body_limit import BodySizeLimit
from agent_engine.api.deps import Guard
from agent_engine.api.docs import DOCS_URL, REDOC_URL, install_docs
from agent_engine.api.json_depth import JsonDepthLimit
from agent_engine.api.openapi_responses import COMMON_PROBLEMS, problem_responses
from agent_engine.api.problems import install_problem_handlers
from agent_engine.api.routes import (
    approvals,
    audit,
    budgets,
    chat,
    costs,
    events,
    forks,
    health,
    keys,
    manifest,
    metrics,
    plans,
    policies,
    replay,
    runs,
    webhooks,
    workers,
)
from agent_engine.config import Settings, get_settings
from agent_engine.engine.context import EngineContext, LLMClientFactory, build_context
from agent_engine.engine.key_limits import RateLimiter, RunAdmission
from agent_engine.engine.keys import ApiKeys
from agent_engine.engine.retention import start_retention
from agent_engine.engine.webhooks import start_sender
from agent_engine.executors.registry import ExecutorRegistry
from agent_engine.storage.migrations import upgrade_async
from agent_engine.ui import install_console
from agent_engine.worker.worker import Worker, WorkerOptions

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    registry: ExecutorRegistry | None = None,
    llm_factory: LLMClientFactory | None = None,
) -> FastAPI:
    """Build the API. The database is reached (and migrated, if enabled) only at start-up.

    With no arguments the settings come from the environment, so this is also the factory for
    ``uvicorn --factory agent_engine.api.app:create_app``.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await upgrade_async(settings.database_url)
        context: EngineContext = build_context(settings, registry=registry, llm_factory=llm_factory)
        app.state.engine = context
        app.state.guard = build_guard(settings, context)
        await context.start()
        stop = asyncio.Event()
        worker_task = None
        if settings.embedded_worker:
            # The embedded default runs one in-process worker with the same code as `worker`.
            worker = Worker(context, WorkerOptions.from_settings(settings))
            worker_task = asyncio.create_task(worker.run(stop))
        # Alerts go where runs are worked on: beside the embedded worker (else `worker` sends).
        sender_task = start_sender(context, stop) if settings.embedded_worker else None
        retention_task = start_retention(context, stop)  # AGENT_ENGINE_RETENTION_DAYS
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            if sender_task is not None:
                await sender_task
            if retention_task is not None:
                await retention_task
            await context.close()

    app = FastAPI(
        title="Deterministic Agent Execution Engine",
        version=__version__,
        lifespan=lifespan,
        # Served by install_docs from packaged assets; FastAPI's own pages load them from a CDN.
        docs_url=None,
        redoc_url=None,
        # Every refusal is problem+json, and the spec says so for each route.
        responses=problem_responses(*COMMON_PROBLEMS),
    )
    install_problem_handlers(app)
    install_docs(app)
    # The last added runs first: the size is bounded before the depth is counted.
    app.add_middleware(JsonDepthLimit, max_depth=settings.max_json_depth)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # A run's routes also answer 404 (no such run or step) and 409 (not in a state for it).
    of_a_run = problem_responses(404, 409)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(workers.router)
    app.include_router(runs.router, responses=of_a_run)
    app.include_router(approvals.router, responses=of_a_run)
    app.include_router(plans.router, responses=of_a_run)
    app.include_router(events.router, responses=of_a_run)
    app.include_router(replay.router, responses=of_a_run)
    app.include_router(forks.router, responses=of_a_run)
    app.include_router(audit.router, responses=of_a_run)
    app.include_router(manifest.router, responses=of_a_run)
    app.include_router(keys.router, responses=problem_responses(404, 409))
    app.include_router(budgets.router, responses=problem_responses(404, 409, 422))
    app.include_router(policies.router)
    app.include_router(chat.router)
    app.include_router(webhooks.router)
    app.include_router(costs.router)
    # The console's pages stay out of the spec; each declares its role as the API's routes do.
    install_console(app)
    # The docs pages and their OAuth2 redirect are public; every other route must say its role.
    check_declared_roles(
        app, unlisted_public=frozenset({DOCS_URL, f"{DOCS_URL}/oauth2-redirect", REDOC_URL})
    )
    return app


def build_guard(settings: Settings, context: EngineContext) -> Guard:
    """Keys, rate limit and runs-in-flight limit of this process, as ``settings`` say."""
    limiter = None
    if settings.rate_limit_per_s > 0:
        limiter = RateLimiter(per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst)
    return Guard(
        enforced=settings.auth_enforced,
        keys=ApiKeys(context.sessions, cache_ttl_s=settings.auth_cache_ttl_s),
        admission=RunAdmission(context.sessions, limit=settings.max_runs_in_flight),
        limiter=limiter,
    )
