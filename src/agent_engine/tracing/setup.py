"""Turning tracing on for a process: a TracerProvider exporting over OTLP/HTTP (or to the
console), configured by the standard ``OTEL_*`` variables, set up once and flushed at exit.

Off unless asked for: ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``) or an OTLP endpoint
variable turns it on, and ``OTEL_SDK_DISABLED=true`` always wins. While it is off the engine's
calls into this package find no tracer and return at once: no span object is ever built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from agent_engine.tracing.ids import ChosenIdGenerator

logger = logging.getLogger(__name__)

INSTRUMENTATION = "agent_engine"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
EXPORTERS = ("otlp", "console")
# Message contents (prompts, answers) go on spans only when this is true.
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# ``gen_ai_latest_experimental`` in this comma-separated list: the latest GenAI conventions.
STABILITY_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
LATEST_GENAI = "gen_ai_latest_experimental"


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable asks for something this process cannot do (said in the message)."""


@dataclass
class TracingState:
    """The process's tracing: a tracer while on (None: off), and how GenAI spans look."""

    tracer: trace.Tracer | None = None
    provider: TracerProvider | None = None
    capture_content: bool = False
    latest_genai: bool = False


STATE = TracingState()


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def tracing_requested(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: an exporter other than ``none`` or an OTLP
    endpoint, unless ``OTEL_SDK_DISABLED`` is true."""
    if _true(env.get("OTEL_SDK_DISABLED")):
        return False
    exporter = (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if exporter:
        return exporter != "none"
    return any((env.get(name) or "").strip() for name in ENDPOINT_VARIABLES)


def _exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip().lower() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")]
    unknown = [name for name in names if name and name not in EXPORTERS]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={','.join(unknown)} is not supported; use otlp or console"
        )
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or ""
    ).strip()
    if "otlp" in names and protocol not in ("", "http/protobuf"):
        raise TracingConfigError(
            f"OTLP protocol {protocol!r} is not supported; traces go over http/protobuf "
            "(unset OTEL_EXPORTER_OTLP_PROTOCOL, or set it to http/protobuf)"
        )
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        # Imported here: a process that never traces never loads the exporter and protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())  # reads OTEL_EXPORTER_OTLP_* itself
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    return exporters


def _resource(service_name: str) -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; ``service_name``
    only where they name no service."""
    resource = Resource.create()
    named = str(resource.attributes.get(SERVICE_NAME, ""))
    if named.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


def setup_tracing(
    service_name: str,
    *,
    env: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
    batch: bool = True,
    register_global: bool = True,
) -> bool:
    """Turn tracing on for this process when the environment asks for it (or ``exporter`` is
    given, as tests do); True when on. ``batch``: export from a background thread in batches
    (the SDK's ``OTEL_BSP_*`` variables tune it); else each span as it ends.
    ``register_global``: also make it the process's global provider (once), so that libraries
    tracing through the global one (FastAPI's request spans) export with it.

    Raises TracingConfigError when the variables ask for an exporter or protocol we lack."""
    env = os.environ if env is None else env
    shutdown_tracing()
    if _true(env.get("OTEL_SDK_DISABLED")) or (exporter is None and not tracing_requested(env)):
        return False
    exporters = [exporter] if exporter is not None else _exporters(env)
    provider = TracerProvider(resource=_resource(service_name), id_generator=ChosenIdGenerator())
    for each in exporters:
        provider.add_span_processor(
            BatchSpanProcessor(each) if batch else SimpleSpanProcessor(each)
        )
    if register_global and not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)  # the SDK allows it once per process
    STATE.provider = provider
    STATE.tracer = provider.get_tracer(INSTRUMENTATION)
    STATE.capture_content = _true(env.get(CAPTURE_CONTENT))
    opt_in = {item.strip() for item in (env.get(STABILITY_OPT_IN) or "").split(",")}
    STATE.latest_genai = LATEST_GENAI in opt_in
    logger.info("tracing on: service %s", provider.resource.attributes.get(SERVICE_NAME))
    return True


def shutdown_tracing() -> None:
    """Export what is still buffered and turn tracing off (at exit; harmless when off)."""
    provider = STATE.provider
    STATE.tracer = None
    STATE.provider = None
    if provider is not None:
        provider.shutdown()


def tracing_active() -> bool:
    """Whether this process records spans (the one cheap check on every hot path)."""
    return STATE.tracer is not None


@contextmanager
def process_tracing(service_name: str) -> Iterator[bool]:
    """Tracing for a whole process (``serve``, ``worker``, ``router serve``) as the
    environment asks: set up at start, flushed and shut down at exit."""
    active = setup_tracing(service_name)
    try:
        yield active
    finally:
        shutdown_tracing()
