"""Large model calls are stored like large step outputs: the strings of a call's request and
response above the blob threshold sit in ``blobs``, the ``llm_calls`` row holds references,
and every reader gets the call whole: the ledger, the audit (hashes over the whole documents),
a response-cache hit, a replay, and a bundle exported and imported on another instance. A call
whose payloads retention pruned is never served by the response cache."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.domain.blob_refs import referenced_blobs
from agent_engine.domain.canonical import content_hash
from agent_engine.engine.bundles import seal, verify_bundle
from agent_engine.engine.context import EngineContext
from agent_engine.engine.retention import prune_database
from agent_engine.storage.tables import Blob
from tests.databases import clone_sqlite
from tests.fakes.llm_servers import FakeLLMServer, openai_completion
from tests.forking import run_to_end
from tests.replay_flow import calls_of, finish, replay
from tests.savings import ledger_rows, priced_app, run_steps, summarize

THRESHOLD = 1024
PROMPT = "".join(f"record {n}: a long line of the text to summarize\n" for n in range(120))
ANSWER_TEXT = "".join(f"point {n}: what the long text says\n" for n in range(120))
ANSWER = openai_completion(ANSWER_TEXT, prompt_tokens=1000, completion_tokens=100)


def strings(document: Any) -> list[str]:
    """Every string of a JSON document, keys aside."""
    if isinstance(document, dict):
        return [text for value in document.values() for text in strings(value)]
    if isinstance(document, list):
        return [text for value in document for text in strings(value)]
    return [document] if isinstance(document, str) else []


def holds(document: Any, text: str) -> bool:
    """Whether a string of ``document`` contains ``text``."""
    return any(text in found for found in strings(document))


def is_stored_apart(stored: Any, whole: str) -> bool:
    """Whether a stored document references blobs and holds no copy of ``whole``."""
    return bool(referenced_blobs(stored)) and not holds(stored, whole)


async def blob_hashes(ctx: EngineContext) -> set[str]:
    async with ctx.sessions() as session:
        return set((await session.scalars(select(Blob.hash))).all())


async def test_a_large_call_is_stored_as_blobs_and_served_whole_by_the_cache_and_replay(
    settings: Settings, tmp_path: Path
) -> None:
    with FakeLLMServer(lambda received: ANSWER) as server:
        async with priced_app(
            settings, server, tmp_path, embedded_worker=True, blob_threshold_bytes=THRESHOLD
        ) as (app, client):
            run = await run_steps(
                client, [summarize(PROMPT), summarize(PROMPT)], response_cache=True
            )
            stored = await calls_of(settings.database_url, run["id"])
            ledger = await ledger_rows(app.state.engine, run["id"])
            verified = (await client.get(f"/v1/agent-runs/{run['id']}/audit/verify")).json()
            view = (await client.get(f"/runs/{run['id']}")).text
            sent = len(server.requests)
            again = await replay(client, run["id"])
            replayed = await finish(client, again["id"])
            served = await ledger_rows(app.state.engine, again["id"])
            blobs = await blob_hashes(app.state.engine)

    assert run["status"] == "completed" and replayed["status"] == "completed"
    first, cached = stored
    # Inline no more: the prompt (in the messages and the wire body) and the answer are blobs.
    assert is_stored_apart(first.request, PROMPT) and is_stored_apart(first.response, ANSWER_TEXT)
    assert referenced_blobs([first.request, first.response]) <= blobs
    # Read back whole, with the hashes of the whole documents.
    whole = ledger[0]
    assert holds(whole.request["messages"], PROMPT) and holds(
        whole.request["wire"], "record 57: a long"
    )
    assert whole.response["text"] == ANSWER_TEXT
    assert whole.response_hash == content_hash(whole.response) == first.response_hash
    assert verified["valid"] is True, verified["first_broken"]
    # The response cache served the second step from the first call's (blobbed) response.
    assert sent == 1 and cached.cached is True and cached.request_hash == first.request_hash
    assert run["steps"][1]["output_data"]["text"] == ANSWER_TEXT
    assert ANSWER_TEXT.splitlines()[3] in view  # the console's model-call view shows it whole
    # The replay served both calls from the records, whole, without a request.
    assert len(server.requests) == 1
    assert [r.replayed for r in served] == [True, True]
    assert [s["output_data"]["text"] for s in replayed["steps"]] == [ANSWER_TEXT] * 2


async def test_a_bundle_carries_the_blobs_of_its_calls_and_imports_whole_elsewhere(
    settings: Settings, tmp_path: Path, sqlite_template: Path
) -> None:
    with FakeLLMServer(lambda received: ANSWER) as server:
        async with priced_app(settings, server, tmp_path, blob_threshold_bytes=THRESHOLD) as (
            _,
            client,
        ):
            run = await run_steps(client, [summarize(PROMPT)])
            exported = await client.get(f"/v1/agent-runs/{run['id']}/export")
        assert exported.status_code == 200, exported.text
        bundle = exported.json()
        (call,) = bundle["llm_calls"]
        carried = {blob["hash"] for blob in bundle["blobs"]}
        assert referenced_blobs([call["request"], call["response"]]) <= carried
        assert not holds(bundle["llm_calls"], ANSWER_TEXT)
        assert bundle["version"] == 3 and verify_bundle(bundle)["valid"] is True
        # Bundles of versions 1 and 2 (fewer documents blobbed) are still read; an unknown
        # version is not.
        assert verify_bundle(seal({**bundle, "version": 1}))["valid"] is True
        assert verify_bundle(seal({**bundle, "version": 2}))["valid"] is True
        assert verify_bundle(seal({**bundle, "version": 4}))["first_broken"]["kind"] == (
            "bundle_invalid"
        )
        # Without the call's blobs the bundle is refused by name.
        steps_only = referenced_blobs(
            [[s["resolved_input"], s["output_data"]] for s in bundle["steps"]]
        )
        lacking = [blob for blob in bundle["blobs"] if blob["hash"] in steps_only]
        refused = verify_bundle({**bundle, "blobs": lacking})
        assert refused["valid"] is False and "blob" in refused["first_broken"]["detail"]

        elsewhere = settings.model_copy(
            update={
                "database_url": clone_sqlite(sqlite_template, tmp_path),
                "blob_threshold_bytes": THRESHOLD,
                "embedded_worker": False,
            }
        )
        app = create_app(elsewhere)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as other,
        ):
            imported = await other.post("/v1/agent-runs/import", json=bundle)
            assert imported.status_code == 201, imported.text
            found = (await other.get(f"/v1/agent-runs/{run['id']}/audit/verify")).json()
            (there,) = await calls_of(elsewhere.database_url, run["id"])
            async with app.state.engine.sessions() as session:
                count = await session.scalar(select(func.count()).select_from(Blob))
            made = await other.post(f"/v1/agent-runs/{run['id']}/replay", json={"mode": "verify"})
            assert made.status_code == 201, made.text
            replayed = await run_to_end(other, made.json()["id"])

    assert found["valid"] is True, found["first_broken"]
    assert there.request == call["request"]  # stored as it came: references, not copies
    assert count == len(bundle["blobs"])
    assert replayed["status"] == "completed", replayed
    assert replayed["steps"][0]["output_data"]["text"] == ANSWER_TEXT


async def test_the_response_cache_never_serves_a_call_whose_payloads_were_pruned(
    settings: Settings, tmp_path: Path
) -> None:
    with FakeLLMServer(lambda received: ANSWER) as server:
        async with priced_app(settings, server, tmp_path, blob_threshold_bytes=THRESHOLD) as (
            app,
            client,
        ):
            first = await run_steps(client, [summarize(PROMPT)], response_cache=True)
            report = await prune_database(
                settings.database_url, timedelta(0), keep_audit=True, dry_run=False
            )
            second = await run_steps(client, [summarize(PROMPT)], response_cache=True)
            (call,) = await ledger_rows(app.state.engine, second["id"])

    assert first["status"] == second["status"] == "completed"
    assert report.runs == 1 and report.payloads.llm_calls == 1
    # Its recorded answer is a hash now: the identical request went to the provider again.
    assert len(server.requests) == 2 and call.cached is False
    assert second["steps"][0]["output_data"]["text"] == ANSWER_TEXT
