"""Running a worker as a process: signals, start-up and clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from agent_engine.config import Settings
from agent_engine.engine.context import build_context
from agent_engine.engine.retention import start_retention
from agent_engine.engine.webhooks import start_sender
from agent_engine.metrics import REGISTRY
from agent_engine.worker.worker import Worker, WorkerOptions

logger = logging.getLogger(__name__)


async def serve_worker(settings: Settings, options: WorkerOptions) -> None:
    """Run one worker until SIGTERM or SIGINT, then stop claiming and drain (graceful shutdown)."""
    ctx = build_context(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await ctx.start()
    logger.info("worker %s started (concurrency %d)", options.worker_id, options.concurrency)
    exporter = None
    if settings.metrics_port and settings.metrics_enabled:
        # A thread of its own: a scrape never waits for the event loop, nor the loop for it.
        exporter, _ = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=REGISTRY
        )
    worker = Worker(ctx, options)
    sender = start_sender(ctx, stop)  # budget alerts' webhook, when one is configured
    retention = start_retention(ctx, stop)  # AGENT_ENGINE_RETENTION_DAYS, when set
    try:
        await worker.run(stop)
    finally:
        stop.set()
        if sender is not None:
            await sender
        if retention is not None:
            await retention
        await ctx.close()
        if exporter is not None:
            exporter.shutdown()
        known = worker.known_runs
        logger.info(
            "worker %s stopped (%d claim rounds; hot path: %d results recorded without reading, "
            "%d fell back)",
            options.worker_id,
            worker.claim_rounds,
            known.hits,
            known.misses,
        )
