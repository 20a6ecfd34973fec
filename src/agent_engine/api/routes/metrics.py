"""``/metrics``: Prometheus's text format, for a scraper holding a viewer key.

It needs a key (when keys are enforced) because it names models, spend and workers' hosts;
Prometheus sends one with ``authorization: {credentials_file: …}`` in its scrape config.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from agent_engine.api.access import requires
from agent_engine.api.deps import Engine
from agent_engine.api.openapi_responses import problem_responses
from agent_engine.domain.principals import Role
from agent_engine.engine.metrics_report import metrics_page
from agent_engine.errors import MetricsDisabledError

router = APIRouter(tags=["health"])

_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "The metrics, Prometheus text format"},
    **problem_responses(404),  # metrics_disabled
}


@router.get("/metrics", response_class=Response, **requires(Role.VIEWER, responses=_TEXT))
async def get_metrics(engine: Engine) -> Response:
    """This process's counters and histograms, and the database's gauges as of now; 404
    ``metrics_disabled`` when AGENT_ENGINE_METRICS_ENABLED is false."""
    if not engine.settings.metrics_enabled:
        raise MetricsDisabledError(
            "metrics are disabled in this process (AGENT_ENGINE_METRICS_ENABLED=false)"
        )
    return Response(await metrics_page(engine), media_type=CONTENT_TYPE_LATEST)
