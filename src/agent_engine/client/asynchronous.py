""":class:`AsyncEngineClient`: the engine's HTTP API from asyncio code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import httpx

from agent_engine.client import _calls as calls
from agent_engine.client._calls import RUNS, UNSET, Call, Unset
from agent_engine.client.errors import EngineUnreachable
from agent_engine.client.models import (
    AuditOut,
    ExecuteOut,
    Health,
    PlanOut,
    RunBudget,
    RunEvent,
    RunOut,
    RunPage,
    RunWithSteps,
    StepOut,
)

T = TypeVar("T")
# The server pings an event stream every 15 s: a minute of silence means the connection is
# dead, and the stream is resumed after the last event seen.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=60.0)


class AsyncEngineClient:
    """An asyncio client of one server. ``base_url`` defaults to ``AGENT_ENGINE_URL`` (else
    http://127.0.0.1:8000) and ``api_key`` to ``AGENT_ENGINE_API_KEY``; ``actor`` names the
    person on a server without keys. Errors are :mod:`agent_engine.client.errors` exceptions."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        actor: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        reconnects: int = 3,
    ) -> None:
        self.base_url = calls.base_url_of(base_url)
        self.reconnects = reconnects
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=calls.headers_of(api_key, actor),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncEngineClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, json=call.body, headers=call.headers
            )
        except httpx.TransportError as exc:
            raise EngineUnreachable(self.base_url, f"{type(exc).__name__}: {exc}") from exc
        calls.check(response)
        return call.read(response)

    async def raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to any route (CSV exports, routes this client has no method for); an
        error answer raises as the methods do."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise EngineUnreachable(self.base_url, f"{type(exc).__name__}: {exc}") from exc
        calls.check(response)
        return response

    async def health(self) -> Health:
        """The server's health and version."""
        return await self._send(calls.health())

    # --- runs --------------------------------------------------------------------------------

    async def create_run(
        self, goal: str, *, idempotency_key: str | None = None, **fields: Any
    ) -> RunWithSteps:
        """Create a run; ``fields`` are the body's (``workspace``, ``steps``, ``budget_usd``,
        ``auto_start``, ``policy``, ``planning``, …)."""
        return await self._send(
            calls.create_run(goal, idempotency_key=idempotency_key, fields=fields)
        )

    async def get_run(self, run_id: str) -> RunWithSteps:
        """The run with its steps."""
        return await self._send(calls.get_run(run_id))

    async def list_runs(
        self,
        *,
        status: str | list[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        forked_from: str | None = None,
        replay_of: str | None = None,
    ) -> RunPage:
        """One page of runs, newest first; ``next_cursor`` fetches the next."""
        return await self._send(calls.list_runs(status, limit, cursor, forked_from, replay_of))

    async def iter_runs(
        self,
        *,
        status: str | list[str] | None = None,
        page_size: int = 50,
        forked_from: str | None = None,
        replay_of: str | None = None,
    ) -> AsyncIterator[RunOut]:
        """Every run that matches, newest first, fetching pages as it goes."""
        cursor: str | None = None
        while True:
            page = await self.list_runs(
                status=status,
                limit=page_size,
                cursor=cursor,
                forked_from=forked_from,
                replay_of=replay_of,
            )
            for run in page.items:
                yield run
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def steps(self, run_id: str) -> list[StepOut]:
        """The run's steps in plan order."""
        return await self._send(calls.steps(run_id))

    async def cost(self, run_id: str) -> dict[str, Any]:
        """The run's cost from the ledger: totals, spent/reserved/remaining, breakdowns."""
        return await self._send(calls.cost(run_id))

    async def start(self, run_id: str) -> RunWithSteps:
        """Hand the run to the workers."""
        return await self._send(calls.run_action(run_id, "start"))

    async def resume(self, run_id: str) -> RunWithSteps:
        """Resume a failed run from its first unfinished step."""
        return await self._send(calls.run_action(run_id, "resume"))

    async def execute(self, run_id: str) -> ExecuteOut:
        """Execute the next ready step synchronously (planning first if needed)."""
        return await self._send(calls.execute(run_id))

    async def cancel(self, run_id: str, reason: str | None = None) -> RunWithSteps:
        """Cancel the run and its unfinished steps."""
        return await self._send(calls.cancel(run_id, reason))

    async def approve(self, run_id: str, step_id: str, comment: str | None = None) -> RunWithSteps:
        """Approve a step that awaits approval."""
        return await self._send(calls.approve(run_id, step_id, comment))

    async def reject(self, run_id: str, step_id: str, reason: str) -> RunWithSteps:
        """Reject a waiting step; the run fails unless the step is optional."""
        return await self._send(calls.reject(run_id, step_id, reason))

    async def retry_step(self, run_id: str, step_id: str) -> RunWithSteps:
        """Retry a failed step by hand."""
        return await self._send(calls.retry_step(run_id, step_id))

    async def change_budget(
        self,
        run_id: str,
        *,
        reason: str,
        budget_usd: Decimal | str | Unset | None = UNSET,
        budget_tokens: int | Unset | None = UNSET,
    ) -> RunBudget:
        """Change the run's budget (``None`` removes a limit); steps paused for it go on."""
        return await self._send(calls.change_budget(run_id, reason, budget_usd, budget_tokens))

    # --- plans -------------------------------------------------------------------------------

    async def plan(self, run_id: str, version: int | None = None) -> PlanOut:
        """A version of the run's plan (default: the latest)."""
        return await self._send(calls.plan(run_id, version))

    async def approve_plan(self, run_id: str, comment: str | None = None) -> RunWithSteps:
        """Approve the plan the run waits on."""
        return await self._send(calls.decide_plan(run_id, "approve", comment))

    async def reject_plan(self, run_id: str, reason: str) -> RunWithSteps:
        """Reject the waiting plan; the run fails."""
        return await self._send(calls.decide_plan(run_id, "reject", reason))

    # --- replay, forks, lineage --------------------------------------------------------------

    async def replay(self, run_id: str, mode: str = "hermetic") -> RunWithSteps:
        """A new run replaying a finished one from its records (``verify``: no side effects)."""
        return await self._send(calls.replay(run_id, mode))

    async def fork(
        self,
        run_id: str,
        from_step: int,
        *,
        input_data: dict[str, Any] | None = None,
        output_data: dict[str, Any] | None = None,
        model: str | None = None,
        replay: bool = False,
    ) -> RunWithSteps:
        """A new run reusing the steps before ``from_step``, with that step changed."""
        overrides = {
            "input_data": input_data,
            "output_data": output_data,
            "model": model,
            "replay": replay,
        }
        return await self._send(calls.fork(run_id, from_step, overrides))

    async def compare(self, run_a: str, run_b: str) -> dict[str, Any]:
        """The two runs step by step: what differs, and the first difference."""
        return await self._send(calls.report(f"{RUNS}/{run_a}/compare/{run_b}"))

    async def divergence(self, run_id: str) -> dict[str, Any]:
        """Each step of a replay or fork against its original."""
        return await self._send(calls.report(f"{RUNS}/{run_id}/divergence"))

    async def family(self, run_id: str) -> dict[str, Any]:
        """The tree of replays and forks the run belongs to."""
        return await self._send(calls.report(f"{RUNS}/{run_id}/family"))

    # --- audit -------------------------------------------------------------------------------

    async def audit(self, run_id: str, *, after_seq: int = 0, limit: int = 1000) -> AuditOut:
        """The run's audit events and whether the chain verifies."""
        return await self._send(calls.audit(run_id, after_seq, limit))

    async def verify_audit(self, run_id: str) -> dict[str, Any]:
        """The server's full verification of the run's chain (``valid``, ``first_broken``)."""
        return await self._send(calls.report(f"{RUNS}/{run_id}/audit/verify"))

    async def export_run(self, run_id: str) -> dict[str, Any]:
        """The run as one self-contained bundle."""
        return await self._send(calls.report(f"{RUNS}/{run_id}/export"))

    async def import_run(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """Load an exported bundle (verified first; admin)."""
        return await self._send(calls.import_run(bundle))

    # --- events ------------------------------------------------------------------------------

    async def events(
        self,
        run_id: str,
        *,
        until: str = "finished",
        after: int = 0,
        type_prefix: str | None = None,
    ) -> AsyncIterator[RunEvent]:
        """The run's events in order, then live ones, until the run is ``finished``
        (completed or cancelled) or, with ``until="waiting"``, waits for a person. A broken
        connection is resumed after the last event seen (``reconnects`` times)."""
        path, params = calls.events_request(run_id, until, after, type_prefix)
        last, failures = after, 0
        while True:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
            try:
                async with self._http.stream(
                    "GET", path, params=params, headers=headers, timeout=STREAM_TIMEOUT
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        calls.check(response)
                    decoder = calls.SseDecoder()
                    async for line in response.aiter_lines():
                        event = decoder.feed(line)
                        if event is not None:
                            parsed = calls.parse_event(event[1])
                            if parsed.seq <= last:
                                continue  # given already, before the connection broke
                            last, failures = parsed.seq, 0
                            yield parsed
                return
            except httpx.TransportError as exc:
                failures += 1
                if failures > self.reconnects:
                    raise EngineUnreachable(self.base_url, f"{type(exc).__name__}: {exc}") from exc

    async def wait(self, run_id: str, *, until: str = "finished") -> RunWithSteps:
        """Follow the run's events until it finishes (or waits for a person); the run then."""
        async for _ in self.events(run_id, until=until):
            pass
        return await self.get_run(run_id)
