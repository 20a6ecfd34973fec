""":class:`EngineClient`: the engine's HTTP API from synchronous code."""

from __future__ import annotations

from collections.abc import Iterator
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


class EngineClient:
    """A client of one server. ``base_url`` defaults to ``AGENT_ENGINE_URL`` (else
    http://127.0.0.1:8000) and ``api_key`` to ``AGENT_ENGINE_API_KEY``; ``actor`` names the
    person on a server without keys. Errors are :mod:`agent_engine.client.errors` exceptions."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        actor: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        reconnects: int = 3,
    ) -> None:
        self.base_url = calls.base_url_of(base_url)
        self.reconnects = reconnects
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=calls.headers_of(api_key, actor),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, params=call.params, json=call.body, headers=call.headers
            )
        except httpx.TransportError as exc:
            raise EngineUnreachable(self.base_url, f"{type(exc).__name__}: {exc}") from exc
        calls.check(response)
        return call.read(response)

    def raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to any route (CSV exports, routes this client has no method for); an
        error answer raises as the methods do."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise EngineUnreachable(self.base_url, f"{type(exc).__name__}: {exc}") from exc
        calls.check(response)
        return response

    def health(self) -> Health:
        """The server's health and version."""
        return self._send(calls.health())

    # --- runs --------------------------------------------------------------------------------

    def create_run(
        self, goal: str, *, idempotency_key: str | None = None, **fields: Any
    ) -> RunWithSteps:
        """Create a run; ``fields`` are the body's (``workspace``, ``steps``, ``budget_usd``,
        ``auto_start``, ``policy``, ``planning``, …)."""
        return self._send(calls.create_run(goal, idempotency_key=idempotency_key, fields=fields))

    def get_run(self, run_id: str) -> RunWithSteps:
        """The run with its steps."""
        return self._send(calls.get_run(run_id))

    def list_runs(
        self,
        *,
        status: str | list[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        forked_from: str | None = None,
        replay_of: str | None = None,
    ) -> RunPage:
        """One page of runs, newest first; ``next_cursor`` fetches the next."""
        return self._send(calls.list_runs(status, limit, cursor, forked_from, replay_of))

    def iter_runs(
        self,
        *,
        status: str | list[str] | None = None,
        page_size: int = 50,
        forked_from: str | None = None,
        replay_of: str | None = None,
    ) -> Iterator[RunOut]:
        """Every run that matches, newest first, fetching pages as it goes."""
        cursor: str | None = None
        while True:
            page = self.list_runs(
                status=status,
                limit=page_size,
                cursor=cursor,
                forked_from=forked_from,
                replay_of=replay_of,
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def steps(self, run_id: str) -> list[StepOut]:
        """The run's steps in plan order."""
        return self._send(calls.steps(run_id))

    def cost(self, run_id: str) -> dict[str, Any]:
        """The run's cost from the ledger: totals, spent/reserved/remaining, breakdowns."""
        return self._send(calls.cost(run_id))

    def start(self, run_id: str) -> RunWithSteps:
        """Hand the run to the workers."""
        return self._send(calls.run_action(run_id, "start"))

    def resume(self, run_id: str) -> RunWithSteps:
        """Resume a failed run from its first unfinished step."""
        return self._send(calls.run_action(run_id, "resume"))

    def execute(self, run_id: str) -> ExecuteOut:
        """Execute the next ready step synchronously (planning first if needed)."""
        return self._send(calls.execute(run_id))

    def cancel(self, run_id: str, reason: str | None = None) -> RunWithSteps:
        """Cancel the run and its unfinished steps."""
        return self._send(calls.cancel(run_id, reason))

    def approve(self, run_id: str, step_id: str, comment: str | None = None) -> RunWithSteps:
        """Approve a step that awaits approval."""
        return self._send(calls.approve(run_id, step_id, comment))

    def reject(self, run_id: str, step_id: str, reason: str) -> RunWithSteps:
        """Reject a waiting step; the run fails unless the step is optional."""
        return self._send(calls.reject(run_id, step_id, reason))

    def retry_step(self, run_id: str, step_id: str) -> RunWithSteps:
        """Retry a failed step by hand."""
        return self._send(calls.retry_step(run_id, step_id))

    def change_budget(
        self,
        run_id: str,
        *,
        reason: str,
        budget_usd: Decimal | str | Unset | None = UNSET,
        budget_tokens: int | Unset | None = UNSET,
    ) -> RunBudget:
        """Change the run's budget (``None`` removes a limit); steps paused for it go on."""
        return self._send(calls.change_budget(run_id, reason, budget_usd, budget_tokens))

    # --- plans -------------------------------------------------------------------------------

    def plan(self, run_id: str, version: int | None = None) -> PlanOut:
        """A version of the run's plan (default: the latest)."""
        return self._send(calls.plan(run_id, version))

    def approve_plan(self, run_id: str, comment: str | None = None) -> RunWithSteps:
        """Approve the plan the run waits on."""
        return self._send(calls.decide_plan(run_id, "approve", comment))

    def reject_plan(self, run_id: str, reason: str) -> RunWithSteps:
        """Reject the waiting plan; the run fails."""
        return self._send(calls.decide_plan(run_id, "reject", reason))

    # --- replay, forks, lineage --------------------------------------------------------------

    def replay(self, run_id: str, mode: str = "hermetic") -> RunWithSteps:
        """A new run replaying a finished one from its records (``verify``: no side effects)."""
        return self._send(calls.replay(run_id, mode))

    def fork(
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
        return self._send(calls.fork(run_id, from_step, overrides))

    def compare(self, run_a: str, run_b: str) -> dict[str, Any]:
        """The two runs step by step: what differs, and the first difference."""
        return self._send(calls.report(f"{RUNS}/{run_a}/compare/{run_b}"))

    def divergence(self, run_id: str) -> dict[str, Any]:
        """Each step of a replay or fork against its original."""
        return self._send(calls.report(f"{RUNS}/{run_id}/divergence"))

    def family(self, run_id: str) -> dict[str, Any]:
        """The tree of replays and forks the run belongs to."""
        return self._send(calls.report(f"{RUNS}/{run_id}/family"))

    # --- audit -------------------------------------------------------------------------------

    def audit(self, run_id: str, *, after_seq: int = 0, limit: int = 1000) -> AuditOut:
        """The run's audit events and whether the chain verifies."""
        return self._send(calls.audit(run_id, after_seq, limit))

    def verify_audit(self, run_id: str) -> dict[str, Any]:
        """The server's full verification of the run's chain (``valid``, ``first_broken``)."""
        return self._send(calls.report(f"{RUNS}/{run_id}/audit/verify"))

    def export_run(self, run_id: str) -> dict[str, Any]:
        """The run as one self-contained bundle."""
        return self._send(calls.report(f"{RUNS}/{run_id}/export"))

    def import_run(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """Load an exported bundle (verified first; admin)."""
        return self._send(calls.import_run(bundle))

    # --- events ------------------------------------------------------------------------------

    def events(
        self,
        run_id: str,
        *,
        until: str = "finished",
        after: int = 0,
        type_prefix: str | None = None,
    ) -> Iterator[RunEvent]:
        """The run's events in order, then live ones, until the run is ``finished``
        (completed or cancelled) or, with ``until="waiting"``, waits for a person. A broken
        connection is resumed after the last event seen (``reconnects`` times)."""
        path, params = calls.events_request(run_id, until, after, type_prefix)
        last, failures = after, 0
        while True:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
            try:
                with self._http.stream(
                    "GET", path, params=params, headers=headers, timeout=STREAM_TIMEOUT
                ) as response:
                    if not response.is_success:
                        response.read()
                        calls.check(response)
                    decoder = calls.SseDecoder()
                    for line in response.iter_lines():
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

    def wait(self, run_id: str, *, until: str = "finished") -> RunWithSteps:
        """Follow the run's events until it finishes (or waits for a person); the run then."""
        for _ in self.events(run_id, until=until):
            pass
        return self.get_run(run_id)
