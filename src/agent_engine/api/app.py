"""The API application: factory, lifespan (migrations, engine context) and middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agent_engine import __version__
from agent_engine.api.body_limit import BodySizeLimit
from agent_engine.api.docs import install_docs
from agent_engine.api.problems import install_problem_handlers
from agent_engine.api.routes import approvals, events, health, plans, policies, runs
from agent_engine.config import Settings, get_settings
from agent_engine.engine.context import EngineContext, LLMClientFactory, build_context
from agent_engine.executors.registry import ExecutorRegistry
from agent_engine.storage.migrations import upgrade_async
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
        await context.start()
        stop = asyncio.Event()
        worker_task = None
        if settings.embedded_worker:
            # The embedded default runs one in-process worker with the same code as `worker`.
            worker = Worker(context, WorkerOptions.from_settings(settings))
            worker_task = asyncio.create_task(worker.run(stop))
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            await context.close()

    app = FastAPI(
        title="Deterministic Agent Execution Engine",
        version=__version__,
        lifespan=lifespan,
        # Served by install_docs from packaged assets; FastAPI's own pages load them from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    install_docs(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(runs.router)
    app.include_router(approvals.router)
    app.include_router(plans.router)
    app.include_router(events.router)
    app.include_router(policies.router)
    return app
