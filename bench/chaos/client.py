"""The workload's HTTP client: every request is retried on connection errors and 5xx answers
(the API may be between database connections while PostgreSQL restarts), with backoff, and the
retries are counted by kind. A retried request is not an anomaly; only a broken invariant is."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

RETRY_FOR_S = 90.0
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 2.0


class ApiError(RuntimeError):
    """The API kept failing, or answered a 4xx the caller did not expect."""


class ChaosClient:
    """An ``httpx.AsyncClient`` on the API with retries; ``retries`` counts them by kind."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=30.0)
        self.retries: Counter[str] = Counter()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """The answer to the request, after retries; a 4xx outside ``accept`` raises."""
        delay = BACKOFF_START_S
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_FOR_S
        while True:
            try:
                response = await self._http.request(
                    method, path, json=json, headers=headers, params=params
                )
            except httpx.TransportError as exc:
                kind, detail = "connection error", repr(exc)
            else:
                if response.status_code < 400 or response.status_code in accept:
                    return response
                if response.status_code < 500:
                    raise ApiError(f"{method} {path}: {response.status_code} {response.text}")
                kind, detail = f"HTTP {response.status_code}", response.text[:500]
            self.retries[kind] += 1
            if loop.time() > deadline:
                raise ApiError(f"{method} {path}: still failing after {RETRY_FOR_S:.0f}s: {detail}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def get(self, path: str, **params: Any) -> Any:
        """The JSON of a GET."""
        return (await self.request("GET", path, params=params or None)).json()

    async def run(self, run_id: str) -> dict[str, Any]:
        """The run with its steps."""
        found: dict[str, Any] = await self.get(f"/v1/agent-runs/{run_id}")
        return found

    async def all_runs(self) -> list[dict[str, Any]]:
        """Every run (without steps), following the cursor."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = await self.get("/v1/agent-runs", **params)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items
