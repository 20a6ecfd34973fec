"""The engine's OpenAI-compatible endpoint driven by the official ``openai`` client: routed
answers, streams, model names, OpenAI-format refusals, and every call in the ledger."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from agent_engine.engine import gateway
from agent_engine.storage.tables import LLMCall
from tests.backends import one_backend
from tests.fakes.llm_servers import FakeLLMServer, ReceivedRequest, Reply, openai_completion
from tests.keys import AuthedApp, authed_app

pytestmark = one_backend(
    "sqlite",
    "the wire translation and its refusals do not depend on the backend; the endpoint's "
    "budgets run on both (test_openai_endpoint_budgets.py)",
)

HELLO: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def _catalog(tmp_path: Path, fake_llm: FakeLLMServer) -> Path:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "providers:\n"
        f"  fakeai: {{kind: openai, base_url: '{fake_llm.openai_base_url}', api_key_env: null,"
        " timeout_s: 5}\n"
        "models:\n"
        "  - {provider: offline, model: offline-1, tier: small, context_window: 1000000,"
        " max_output_tokens: 200000, last_resort: true}\n"
        "  - {provider: fakeai, model: mini, tier: small, context_window: 100000,"
        " max_output_tokens: 4096, prices: {input: 1, output: 2}}\n"
        "  - {provider: fakeai, model: big, tier: large, context_window: 100000,"
        " max_output_tokens: 4096, prices: {input: 10, output: 20}}\n",
        encoding="utf-8",
    )
    return catalog


def _sdk(app: FastAPI, key: str, project: str | None = None) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return openai.AsyncOpenAI(
        base_url="http://engine.test/v1",
        api_key=key,
        project=project,
        http_client=http,
        max_retries=0,
    )


@asynccontextmanager
async def _gateway(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer
) -> AsyncIterator[AuthedApp]:
    async with authed_app(settings, models_file=_catalog(tmp_path, fake_llm)) as authed:
        yield authed


async def _gateway_calls(app: FastAPI) -> list[LLMCall]:
    async with app.state.engine.sessions() as session:
        rows = await session.scalars(
            select(LLMCall).where(LLMCall.purpose == "gateway").order_by(LLMCall.created_at)
        )
        return list(rows.all())


async def test_routed_pinned_and_tier_calls_answer_with_usage_and_land_in_the_ledger(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    async with _gateway(settings, tmp_path, fake_llm) as authed:
        token = await authed.key("ide", Role.OPERATOR)
        key_id = (await authed.guard.keys.authenticate(token)).key_id  # type: ignore[union-attr]
        sent_before = len(fake_llm.requests)
        fake_llm.script(
            openai_completion("from mini", prompt_tokens=21, completion_tokens=4, cached_tokens=5),
            openai_completion("from big", prompt_tokens=8, completion_tokens=2),
        )
        async with _sdk(authed.app, token, project="alpha") as sdk:
            auto = await sdk.chat.completions.create(model="auto", messages=HELLO, max_tokens=50)
            large = await sdk.chat.completions.create(model="large", messages=HELLO)
            pinned = await sdk.chat.completions.create(model="offline:offline-1", messages=HELLO)
        assert auto.model == "fakeai:mini"
        assert auto.choices[0].message.content == "from mini"
        assert auto.choices[0].finish_reason == "stop"
        assert auto.usage is not None
        assert (auto.usage.prompt_tokens, auto.usage.completion_tokens) == (21, 4)
        assert auto.usage.prompt_tokens_details is not None
        assert auto.usage.prompt_tokens_details.cached_tokens == 5
        assert large.model == "fakeai:big" and large.choices[0].message.content == "from big"
        assert pinned.model == "offline:offline-1" and pinned.choices[0].message.content
        sent = fake_llm.requests[sent_before:]
        assert [r.body["model"] for r in sent] == ["mini", "big"]  # offline sends nothing
        assert sent[0].body["max_tokens"] == 50
        calls = await _gateway_calls(authed.app)
    assert [(c.provider, c.model) for c in calls] == [
        ("fakeai", "mini"),
        ("fakeai", "big"),
        ("offline", "offline-1"),
    ]
    assert {(c.run_id, c.project, c.api_key_id) for c in calls} == {(None, "alpha", key_id)}
    assert auto.id == f"chatcmpl-{calls[0].id.hex}"  # the answer names its ledger row
    assert calls[0].input_tokens == 21 and calls[0].cost_usd is not None
    assert calls[0].request["gateway"]["model"] == "auto"


async def test_a_stream_reassembles_to_the_same_text_and_ends_with_usage(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    text = "A streamed answer that is long enough to arrive in several pieces. " * 3
    async with _gateway(settings, tmp_path, fake_llm) as authed:
        token = await authed.key("ide", Role.OPERATOR)
        fake_llm.script(openai_completion(text, prompt_tokens=9, completion_tokens=30))
        async with _sdk(authed.app, token) as sdk:
            stream = await sdk.chat.completions.create(
                model="fakeai:mini",
                messages=HELLO,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
        calls = await _gateway_calls(authed.app)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1
    assert "".join(pieces) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 39
    assert {c.model for c in chunks} == {"fakeai:mini"}
    assert len(calls) == 1 and calls[0].project is None


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"model": "nobody:knows"}, "model"),
        ({"messages": []}, "messages"),
    ],
)
async def test_bad_input_is_a_400_in_openai_format_and_reaches_no_model(
    settings: Settings,
    tmp_path: Path,
    fake_llm: FakeLLMServer,
    extra: dict[str, Any],
    param: str,
) -> None:
    async with _gateway(settings, tmp_path, fake_llm) as authed:
        token = await authed.key("ide", Role.OPERATOR)
        sent_before = len(fake_llm.requests)
        body: dict[str, Any] = {"model": "auto", "messages": HELLO, **extra}
        async with _sdk(authed.app, token) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.chat.completions.create(**body)
        assert caught.value.status_code == 400
        assert caught.value.param == param
        assert isinstance(caught.value.body, dict) and caught.value.body["type"] == (
            "invalid_request_error"
        )
        raw = await authed.http.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
        assert len(fake_llm.requests) == sent_before
        assert await _gateway_calls(authed.app) == []


async def test_without_a_key_or_with_a_viewer_key_the_client_is_refused(
    settings: Settings, tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    async with _gateway(settings, tmp_path, fake_llm) as authed:
        viewer = await authed.key("reader", Role.VIEWER)
        async with _sdk(authed.app, "ae_000000000000_nope") as sdk:
            with pytest.raises(openai.AuthenticationError) as unknown:
                await sdk.chat.completions.create(model="auto", messages=HELLO)
        async with _sdk(authed.app, viewer) as sdk:
            with pytest.raises(openai.PermissionDeniedError) as weak:
                await sdk.chat.completions.create(model="auto", messages=HELLO)
        missing = await authed.http.post(
            "/v1/chat/completions", json={"model": "auto", "messages": HELLO}
        )
    assert unknown.value.status_code == 401 and unknown.value.code == "invalid_api_key"
    assert "unknown or revoked" in unknown.value.message
    assert weak.value.status_code == 403
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert missing.json()["code"] == "unauthenticated"  # still a problem document too


async def test_with_auth_off_auto_is_answered_by_the_offline_model_and_recorded_without_a_key(
    settings: Settings,
) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app), _sdk(app, "not-an-engine-key") as sdk:
        answer = await sdk.chat.completions.create(
            model="auto",
            messages=[{"role": "system", "content": "be brief"}, *HELLO],
            response_format={"type": "json_object"},
        )
        async with _sdk(app, "ae_000000000000_nope") as unknown:
            # Shaped like an engine key, so checked even with auth off (a typo is not ignored).
            with pytest.raises(openai.AuthenticationError):
                await unknown.chat.completions.create(model="auto", messages=HELLO)
        calls = await _gateway_calls(app)
    assert answer.model == "offline:offline-1"
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)
    assert len(calls) == 1
    assert (calls[0].api_key_id, calls[0].project, calls[0].cost_usd) == (None, None, 0)


async def test_a_call_whose_caller_hangs_up_mid_flight_is_still_written_to_the_ledger(
    settings: Settings, tmp_path: Path
) -> None:
    arrived = threading.Event()

    def slow_answer(received: ReceivedRequest) -> Reply:
        arrived.set()
        reply = openai_completion("late", prompt_tokens=6, completion_tokens=3)
        return Reply(body=reply.body, delay_s=0.3)

    with FakeLLMServer(responder=slow_answer) as slow:
        app = create_app(settings.model_copy(update={"models_file": _catalog(tmp_path, slow)}))
        body = {"model": "fakeai:mini", "messages": HELLO}
        async with app.router.lifespan_context(app):
            caller = gateway.GatewayCaller(project="p", api_key_id=None)
            call = asyncio.create_task(gateway.answer_chat(app.state.engine, body, caller))
            assert await asyncio.to_thread(arrived.wait, 10)  # the request is at the provider
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            calls = await _gateway_calls(app)
    assert [(c.model, c.output_tokens, c.project) for c in calls] == [("mini", 3, "p")]
    assert calls[0].cost_usd is not None and calls[0].cost_usd > 0
