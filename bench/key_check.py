"""What checking an API key adds to a request: p50 and p95 of ``GET /v1/agent-runs/{id}``
through the ASGI app (httpx, no network) with auth off, with a valid key (verified keys cached,
the default), and with the cache off (one indexed lookup and an HMAC per request); then the key
check alone. SQLite always, PostgreSQL when it answers. Target: at most 0.5 ms added at p50.

    python -m bench.key_check [--requests 2000] [--postgres-url URL] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from agent_engine.api.app import create_app
from agent_engine.api.deps import Guard
from agent_engine.config import Settings
from agent_engine.domain.principals import Role
from agent_engine.storage.migrations import upgrade
from bench.databases import DEFAULT_ADMIN_URL, check_postgres, fresh_database
from bench.stats import Summary

BLOCK = 50  # requests per mode before switching, so that drift hits every mode alike
MODES = ("auth off", "key, cached", "key, cache off")
TARGET_MS = 0.5


@dataclass(frozen=True)
class Row:
    backend: str
    what: str
    summary: Summary
    baseline_p50: float | None


@asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http,
    ):
        yield app, http


async def _measure(url: str, requests: int) -> dict[str, list[float]]:
    base = Settings(
        database_url=url,
        auto_migrate=False,
        embedded_worker=False,
        _env_file=None,  # type: ignore[call-arg]
    )
    variants = {
        "auth off": base,
        "key, cached": base.model_copy(update={"auth_required": True}),
        "key, cache off": base.model_copy(update={"auth_required": True, "auth_cache_ttl_s": 0}),
    }
    async with AsyncExitStack() as stack:
        clients = {m: await stack.enter_async_context(_client(s)) for m, s in variants.items()}
        app, _ = clients["key, cached"]
        guard: Guard = app.state.guard
        token = (
            await guard.keys.create(
                name="bench", role=Role.VIEWER, may_auto_approve=False, created_by="bench"
            )
        ).token
        _, off_client = clients["auth off"]
        run = await off_client.post(
            "/v1/agent-runs", json={"goal": "g", "steps": [{"step_type": "noop", "input_data": {}}]}
        )
        path = f"/v1/agent-runs/{run.json()['id']}"
        headers = {
            m: {} if m == "auth off" else {"Authorization": f"Bearer {token}"} for m in MODES
        }
        samples: dict[str, list[float]] = {m: [] for m in MODES}
        for m in MODES:  # warm-up: pools, caches, code paths
            for _ in range(BLOCK):
                await clients[m][1].get(path, headers=headers[m])
        while len(samples[MODES[-1]]) < requests:
            for m in MODES:
                http = clients[m][1]
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    response = await http.get(path, headers=headers[m])
                    samples[m].append((time.perf_counter() - start) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"{m}: {response.status_code} {response.text}")
        for label, ttl_key in (
            ("check alone, cached", "key, cached"),
            ("check alone, lookup", "key, cache off"),
        ):
            keys = clients[ttl_key][0].state.guard.keys
            timings = samples.setdefault(label, [])
            for _ in range(requests):
                start = time.perf_counter()
                assert await keys.authenticate(token) is not None
                timings.append((time.perf_counter() - start) * 1000)
    return samples


def _rows(backend: str, samples: dict[str, list[float]]) -> list[Row]:
    baseline = Summary.of(samples["auth off"]).p50
    return [
        Row(
            backend,
            what,
            Summary.of(values),
            None if what.startswith("check") or what == "auth off" else baseline,
        )
        for what, values in samples.items()
    ]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _print(rows: list[Row]) -> None:
    header = f"{'backend':<9} {'measured':<22} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'+p50 ms':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        added = (
            row.summary.p50 - row.baseline_p50
            if row.baseline_p50 is not None and row.summary.p50 is not None
            else None
        )
        print(
            f"{row.backend:<9} {row.what:<22} {row.summary.count:>6} {_fmt(row.summary.p50):>8} "
            f"{_fmt(row.summary.p95):>8} {_fmt(added):>8}"
        )
    print(f"target: a valid key adds at most {TARGET_MS} ms at p50 ('+p50' against auth off)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per mode")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("AGENT_ENGINE_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL),
    )
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite"]
    if not args.skip_postgres:
        problem = check_postgres(args.postgres_url)
        if problem is None:
            backends.append("postgres")
        else:
            print(f"skipping PostgreSQL: {problem}")
    rows: list[Row] = []
    for backend in backends:
        with fresh_database(backend, "key_check", admin_url=args.postgres_url) as db:
            upgrade(db.engine_url)
            rows += _rows(backend, asyncio.run(_measure(db.engine_url, args.requests)))
    _print(rows)


if __name__ == "__main__":
    main()
