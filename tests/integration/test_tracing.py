"""OpenTelemetry traces of real runs, collected in memory: the span tree of a run (its steps,
their model and tool calls, an approval wait), the trace id the run records, a caller's
``traceparent`` continued by the API and by the router service over HTTP, message contents
only when asked for, the semantic-conventions opt-in, and nothing at all while tracing is off."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agent_engine.api.app import create_app
from agent_engine.cli.log_setup import configure_logging
from agent_engine.config import Settings
from agent_engine.domain.plan import PlanStep
from agent_engine.engine.context import EngineContext
from agent_engine.engine.control import resume_run
from agent_engine.engine.manual import execute_one
from agent_engine.engine.runs import CreateRunRequest, create_run
from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.router.app import create_router_app
from agent_engine.router.client import RouterClient
from agent_engine.router.service import RouterService
from agent_engine.tracing import setup_tracing, shutdown_tracing, tracing_requested
from agent_engine.tracing.setup import STATE
from tests.backends import one_backend
from tests.engines import engine_context, new_run, running_worker, snapshot, wait_finished
from tests.fakes.loopback import LoopbackServer
from tests.mcp_servers import time_server, write_servers

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
SECRET_WORDS = "the secret words are blue giraffe"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, every span kept in memory as it ends (default conventions,
    no contents)."""
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    exporter = InMemorySpanExporter()
    assert setup_tracing("agent-engine-test", exporter=exporter, batch=False, register_global=False)
    yield exporter
    shutdown_tracing()


@pytest.fixture
def traced_settings(settings: Settings, workspace_root: Path) -> Settings:
    (workspace_root / "project").mkdir()
    return settings


@pytest.fixture
async def api(traced_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(traced_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def hex_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


def named(found: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [span for span in found if span.name.startswith(prefix)]


async def run_with_a_model_call_a_command_and_an_approval(
    api: httpx.AsyncClient, workspace: Path
) -> dict[str, Any]:
    """Create (with the caller's traceparent), execute, approve the command, execute, done."""
    body = {
        "goal": "traced",
        "workspace": str(workspace),
        "steps": [
            {"step_type": "analyze", "input_data": {"instruction": SECRET_WORDS}},
            {"step_type": "run_command", "input_data": {"argv": ["ls"]}},
        ],
    }
    created = await api.post("/v1/agent-runs", json=body, headers={"traceparent": TRACEPARENT})
    assert created.status_code == 201, created.text
    run = created.json()
    executed = (await api.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert executed["steps"][0]["status"] == "completed"
    waiting = (await api.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert waiting["steps"][1]["status"] == "awaiting_approval", waiting["steps"][1]["error"]
    step_id = waiting["steps"][1]["id"]
    approved = await api.post(f"/v1/agent-runs/{run['id']}/steps/{step_id}/approve", json={})
    assert approved.status_code == 200, approved.text
    done = (await api.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert done["status"] == "completed", done
    return dict(done)


async def test_a_run_is_one_trace_of_its_steps_model_call_command_and_approval_wait(
    spans: InMemorySpanExporter, api: httpx.AsyncClient, workspace_root: Path
) -> None:
    run = await run_with_a_model_call_a_command_and_an_approval(api, workspace_root / "project")
    found = spans.get_finished_spans()
    # The caller's trace is continued: the run records it and every span is in it.
    assert run["trace_id"] == CALLER_TRACE
    assert {hex_trace(span) for span in found} == {CALLER_TRACE}
    (root,) = named(found, "invoke_agent")
    assert parent_id(root) == CALLER_SPAN
    assert root.attributes is not None
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["agent_engine.run.id"] == run["id"]
    assert root.attributes["agent_engine.run.status"] == "completed"
    assert root.attributes["gen_ai.usage.input_tokens"] == run["input_tokens"] > 0
    assert "agent_engine.run.goal" not in root.attributes
    analyze, command = named(found, "step analyze"), named(found, "step run_command")
    assert len(analyze) == 1 and len(command) == 1
    assert parent_id(analyze[0]) == parent_id(command[0]) == hex_id(root)
    # The model call under its step, with the GenAI conventions (and their v1.36.0 name).
    (chat,) = named(found, "chat ")
    assert parent_id(chat) == hex_id(analyze[0])
    assert chat.kind is SpanKind.CLIENT
    attributes = dict(chat.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "offline"
    assert chat.name == f"chat {attributes['gen_ai.request.model']}"
    assert attributes["gen_ai.response.model"] == attributes["gen_ai.request.model"]
    assert attributes["gen_ai.usage.input_tokens"] == run["input_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == run["output_tokens"]
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["agent_engine.cost_usd"] == 0.0
    assert isinstance(attributes["agent_engine.routing.reason"], str)
    # No contents unless asked for.
    assert not any("messages" in name for name in attributes)
    assert not chat.events
    assert SECRET_WORDS not in str([dict(span.attributes or {}) for span in found])
    # The command is a tool call under its step; the approval wait hangs from the run.
    (tool,) = named(found, "execute_tool run_command")
    assert parent_id(tool) == hex_id(command[0])
    assert tool.attributes is not None and tool.attributes["gen_ai.tool.name"] == "run_command"
    (wait,) = named(found, "await_approval run_command")
    assert parent_id(wait) == hex_id(root)
    assert wait.attributes is not None
    assert wait.attributes["agent_engine.approval.decision"] == "approved"
    assert wait.start_time is not None and wait.end_time is not None
    assert wait.start_time < wait.end_time


async def test_a_run_created_without_traceparent_starts_its_own_trace(
    spans: InMemorySpanExporter, traced_settings: Settings
) -> None:
    async with engine_context(traced_settings) as ctx:
        request = CreateRunRequest(
            goal="g", steps=[PlanStep(step_type="noop", input_data={"value": 1})], auto_start=False
        )
        view = await create_run(ctx, request, actor="t", idempotency_key=None)
        assert view.run.trace_id is not None
        assert await ctx_execute(ctx, view.run.id) == "completed"
        stored = (await snapshot(ctx, view.run.id))["run"]
    assert stored["trace_id"] == view.run.trace_id
    assert stored["trace_parent_span_id"] is None and stored["trace_sampled"] is True
    (root,) = named(spans.get_finished_spans(), "invoke_agent")
    assert root.parent is None
    assert hex_trace(root) == view.run.trace_id
    assert hex_id(root) == view.run.trace_span_id
    (step,) = named(spans.get_finished_spans(), "step noop")
    assert parent_id(step) == hex_id(root)


async def ctx_execute(ctx: EngineContext, run_id: uuid.UUID) -> str:
    """Execute the run's next step by hand; the run's status after it."""
    await execute_one(ctx, str(run_id), actor="t")
    return str((await snapshot(ctx, run_id))["run"]["status"])


async def test_tracing_off_makes_no_spans_and_records_no_trace(traced_settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    shutdown_tracing()
    async with engine_context(traced_settings) as ctx:
        request = CreateRunRequest(
            goal="g", steps=[PlanStep(step_type="noop", input_data={"value": 1})], auto_start=False
        )
        view = await create_run(ctx, request, actor="t", idempotency_key=None)
        assert await ctx_execute(ctx, view.run.id) == "completed"
        done = await wait_finished(ctx, view.run.id)
    assert done["run"]["trace_id"] is None
    assert exporter.get_finished_spans() == ()
    assert STATE.tracer is None


@one_backend("sqlite", "no database: environment parsing only")
def test_tracing_is_on_only_when_the_environment_asks_and_sdk_disabled_wins(
    database_url: str,
) -> None:
    assert not tracing_requested({})
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing_requested({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318"})
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}
    assert not tracing_requested(disabled)
    assert not setup_tracing("t", env=disabled, exporter=InMemorySpanExporter())
    assert STATE.tracer is None


def _request(text: str) -> CompletionRequest:
    return CompletionRequest(
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content=text),
        ]
    )


@one_backend("sqlite", "no database: the router alone")
@pytest.mark.parametrize("latest", [False, True], ids=["default", "latest-experimental"])
async def test_contents_only_when_asked_and_the_opt_in_chooses_the_conventions(
    database_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch, latest: bool
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    if latest:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    else:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    exporter = InMemorySpanExporter()
    assert setup_tracing("t", exporter=exporter, batch=False, register_global=False)
    try:
        response, _, _ = await RouterService.from_settings(settings).complete(
            _request(SECRET_WORDS)
        )
    finally:
        shutdown_tracing()
    (chat,) = exporter.get_finished_spans()
    attributes = dict(chat.attributes or {})
    assert attributes["gen_ai.provider.name"] == "offline"
    if latest:
        assert "gen_ai.system" not in attributes
        assert not chat.events
        assert SECRET_WORDS in str(attributes["gen_ai.input.messages"])
        assert "Be brief." in str(attributes["gen_ai.system_instructions"])
        assert response.text[:20] in str(attributes["gen_ai.output.messages"])
    else:
        assert attributes["gen_ai.system"] == "offline"
        assert not any(name.endswith("messages") for name in attributes)
        events = {event.name: dict(event.attributes or {}) for event in chat.events}
        assert events["gen_ai.user.message"]["content"] == SECRET_WORDS
        assert events["gen_ai.system.message"]["content"] == "Be brief."
        assert events["gen_ai.choice"]["finish_reason"] == "stop"


@one_backend("sqlite", "no database: the router service over HTTP")
async def test_the_router_service_continues_the_callers_trace_over_http(
    database_url: str, settings: Settings, spans: InMemorySpanExporter
) -> None:
    tracer = STATE.tracer
    assert tracer is not None
    with (
        LoopbackServer(create_router_app(settings)) as server,
        tracer.start_as_current_span("step analyze") as step,
    ):
        await RouterClient(server.base_url).complete(_request("hello"))
    (chat,) = named(spans.get_finished_spans(), "chat ")
    # Another process would do the same: the span's parent came in the traceparent header.
    assert chat.parent is not None and chat.parent.is_remote
    assert chat.parent.span_id == step.get_span_context().span_id
    assert chat.context is not None
    assert chat.context.trace_id == step.get_span_context().trace_id
    assert chat.status.status_code is not StatusCode.ERROR


async def test_a_run_executed_by_a_worker_ends_in_its_span_and_logs_carry_its_trace(
    spans: InMemorySpanExporter, traced_settings: Settings
) -> None:
    stream = io.StringIO()
    handler = configure_logging(traced_settings.model_copy(update={"log_format": "json"}), stream)
    try:
        async with engine_context(traced_settings) as ctx, running_worker(ctx):
            steps = [
                PlanStep(step_type="noop", input_data={"value": 1}),
                PlanStep(step_type="noop", input_data={"value": 2, "fail": True}, optional=True),
            ]
            run_id = await new_run(ctx, steps, auto_start=True)
            done = await wait_finished(ctx, run_id)
    finally:
        logging.getLogger().removeHandler(handler)
    trace_id = done["run"]["trace_id"]
    found = spans.get_finished_spans()
    (root,) = named(found, "invoke_agent")
    assert hex_trace(root) == trace_id and hex_id(root) == done["run"]["trace_span_id"]
    steps_spans = named(found, "step noop")
    assert len(steps_spans) == 2
    assert {parent_id(span) for span in steps_spans} == {hex_id(root)}
    failed = next(s for s in steps_spans if s.status.status_code is StatusCode.ERROR)
    assert failed.attributes is not None
    assert failed.attributes["agent_engine.step.outcome"] == "failed"
    assert failed.attributes["error.type"] == failed.status.description
    # The step's warning line names the run's trace.
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    warning = next(line for line in lines if "failed" in line["event"] and "step_id" in line)
    assert warning["trace_id"] == trace_id


@one_backend("sqlite", "the console reads the run as every page does")
async def test_the_console_links_the_runs_trace_when_a_url_template_is_set(
    database_url: str, spans: InMemorySpanExporter, traced_settings: Settings
) -> None:
    template = "http://jaeger.example:16686/trace/{trace_id}"
    app = create_app(traced_settings.model_copy(update={"trace_url_template": template}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        body = {"goal": "g", "steps": [{"step_type": "noop", "input_data": {"value": 1}}]}
        run = (await http.post("/v1/agent-runs", json=body)).json()
        page = (await http.get(f"/runs/{run['id']}")).text
    assert f'href="http://jaeger.example:16686/trace/{run["trace_id"]}"' in page


@one_backend("sqlite", "the tool span does not depend on the backend; the run tree is on both")
async def test_an_mcp_tool_step_is_an_execute_tool_span_named_after_the_tool(
    database_url: str, spans: InMemorySpanExporter, traced_settings: Settings, tmp_path: Path
) -> None:
    servers = write_servers(tmp_path, {"time": time_server()})
    app = create_app(traced_settings.model_copy(update={"mcp_servers": servers}))
    call = {"server": "time", "tool": "get_current_time", "arguments": {"timezone": "UTC"}}
    step = {"step_type": "mcp_tool", "input_data": call}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        run = (await http.post("/v1/agent-runs", json={"goal": "g", "steps": [step]})).json()
        executed = (await http.post(f"/v1/agent-runs/{run['id']}/execute")).json()
        if executed["steps"][0]["status"] == "awaiting_approval":
            step_id = executed["steps"][0]["id"]
            await http.post(f"/v1/agent-runs/{run['id']}/steps/{step_id}/approve", json={})
            executed = (await http.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert executed["steps"][0]["status"] == "completed", executed["steps"][0]["error"]
    (tool,) = named(spans.get_finished_spans(), "execute_tool get_current_time")
    (mcp_step,) = named(spans.get_finished_spans(), "step mcp_tool")
    assert parent_id(tool) == hex_id(mcp_step)
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.name"] == "get_current_time"


async def test_the_planners_model_calls_hang_from_the_runs_span(
    spans: InMemorySpanExporter, api: httpx.AsyncClient, workspace_root: Path
) -> None:
    body = {"goal": "Summarize the project", "workspace": str(workspace_root / "project")}
    run = (await api.post("/v1/agent-runs", json=body)).json()
    assert run["status"] == "created" and run["trace_id"] is not None
    planned = await api.post(f"/v1/agent-runs/{run['id']}/execute")
    assert planned.status_code == 200, planned.text
    for _ in range(30):  # the plan's steps, to the run's end (and its span)
        view = (await api.get(f"/v1/agent-runs/{run['id']}")).json()
        if view["status"] in ("completed", "failed"):
            break
        waiting = [s for s in view["steps"] if s["status"] == "awaiting_approval"]
        for step in waiting:
            await api.post(f"/v1/agent-runs/{run['id']}/steps/{step['id']}/approve", json={})
        if not waiting:
            await api.post(f"/v1/agent-runs/{run['id']}/execute")
    found = spans.get_finished_spans()
    (root,) = named(found, "invoke_agent")
    first = min(named(found, "chat "), key=lambda span: span.start_time or 0)
    assert first.start_time is not None
    assert not any(  # the first model call is the planner's: before any step began
        (step.start_time or 0) < first.start_time for step in named(found, "step ")
    )
    assert parent_id(first) == hex_id(root)
    assert hex_trace(first) == hex_trace(root) == run["trace_id"]


async def test_a_resumed_failed_run_ends_in_a_second_span_of_the_same_trace(
    spans: InMemorySpanExporter, traced_settings: Settings
) -> None:
    async with engine_context(traced_settings) as ctx:
        step = PlanStep(step_type="noop", input_data={"value": 1, "fail_attempts": 1})
        run_id = await new_run(ctx, [step], auto_start=False)
        assert await ctx_execute(ctx, run_id) == "failed"
        first_span = (await snapshot(ctx, run_id))["run"]["trace_span_id"]
        await resume_run(ctx, str(run_id), actor="t")
        assert await ctx_execute(ctx, run_id) == "completed"
        stored = (await snapshot(ctx, run_id))["run"]
    failed, completed = named(spans.get_finished_spans(), "invoke_agent")
    assert failed.status.status_code is StatusCode.ERROR
    assert hex_id(failed) == first_span != hex_id(completed) == stored["trace_span_id"]
    assert hex_trace(failed) == hex_trace(completed) == stored["trace_id"]
    first_attempt, second_attempt = named(spans.get_finished_spans(), "step noop")
    assert parent_id(first_attempt) == hex_id(failed)
    assert parent_id(second_attempt) == hex_id(completed)
