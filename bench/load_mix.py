"""The request mix of ``bench.load``: closed-loop asyncio clients against running servers.

Three kinds of task share one measurement window:

- **clients** (the concurrency level): each sends one request after another, no pause, picking
  create : read : list in the ratio 1 : 6 : 2. A create posts a run of two no-op steps that the
  server's embedded worker starts at once; a read is ``GET /v1/agent-runs/{id}`` of a run made
  earlier; a list is ``GET /v1/agent-runs`` (its first page, 50 runs).
- **approvers**: each creates a run whose first step requires approval, follows its events
  (``until=waiting``) until the step waits, approves it through the API as another person, and
  follows the run to its end.
- **subscribers**: each holds an event stream open on the newest run a client made, until that
  run's last event, then opens the next one.

A request's latency is timed from before it is sent to its whole body read. Any status other
than 2xx, any exception, and a stream that ends before its run does are errors.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

MIX = (("create", 1), ("read", 6), ("list", 2))
TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.cancelled"})
REQUEST_TIMEOUT_S = 60.0
APPROVER = {"X-Actor": "load-approver"}  # not the runs' creator: four eyes
MAX_ERRORS_KEPT = 10
NEWER_RUN_WAIT_S = 0.05
STREAM_GRACE_S = 10.0  # after the window: how long streams may take to reach their run's end


def noop_run(label: str, *, gated: bool = False) -> dict[str, Any]:
    """A run of two no-op steps, started at once; with ``gated`` its first step needs approval."""
    first: dict[str, Any] = {"step_type": "noop", "input_data": {"value": label}}
    if gated:
        first["requires_approval"] = True
    second = {"step_type": "noop", "input_data": {"value": f"{label}/2"}}
    return {"goal": f"load: {label}", "steps": [first, second], "auto_start": True}


@dataclass
class Recorder:
    """Latencies (ms) by request kind, counted only for requests started inside the window."""

    window_start: float = 0.0
    window_end: float = float("inf")
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    streams: int = 0
    events: int = 0
    cpu_s: float = 0.0  # the servers' CPU time during the window

    def counts(self, began: float) -> bool:
        return self.window_start <= began < self.window_end

    def ok(self, kind: str, began: float, ended: float) -> None:
        if self.counts(began):
            self.latencies.setdefault(kind, []).append((ended - began) * 1000)

    def error(self, kind: str, began: float, what: str) -> None:
        if self.counts(began):
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.error_samples) < MAX_ERRORS_KEPT:
                self.error_samples.append(f"{kind}: {what}")


@dataclass
class Shared:
    """What the tasks of one measurement share: the runs made so far, the stop signal."""

    recorder: Recorder
    run_ids: list[str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    made: int = 0

    def label(self) -> str:
        self.made += 1
        return f"run {self.made}"


async def _request(
    http: httpx.AsyncClient,
    shared: Shared,
    kind: str,
    method: str,
    url: str,
    **kwargs: Any,
) -> dict[str, Any] | None:
    """Send one request, record its latency or its error; its JSON body when it succeeded."""
    began = time.perf_counter()
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        shared.recorder.error(kind, began, f"{type(exc).__name__}: {exc}")
        return None
    ended = time.perf_counter()
    if not response.is_success:
        shared.recorder.error(kind, began, f"{response.status_code} {response.text[:200]}")
        return None
    shared.recorder.ok(kind, began, ended)
    body: dict[str, Any] = response.json()
    return body


async def client_loop(http: httpx.AsyncClient, shared: Shared, seed: int) -> None:
    """One client: the 1 : 6 : 2 mix in a shuffled order, one request at a time, until stopped."""
    rng = random.Random(seed)
    cycle = [kind for kind, weight in MIX for _ in range(weight)]
    while not shared.stop.is_set():
        rng.shuffle(cycle)
        for kind in cycle:
            if shared.stop.is_set():
                return
            if kind == "create":
                run = await _request(
                    http, shared, kind, "POST", "/v1/agent-runs", json=noop_run(shared.label())
                )
                if run is not None:
                    shared.run_ids.append(str(run["id"]))
            elif kind == "read":
                run_id = rng.choice(shared.run_ids)
                await _request(http, shared, kind, "GET", f"/v1/agent-runs/{run_id}")
            else:
                await _request(http, shared, kind, "GET", "/v1/agent-runs")


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Decode a Server-Sent Events stream into the JSON bodies of its ``data`` fields."""
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


async def follow(
    http: httpx.AsyncClient, shared: Shared, run_id: str, *, until: str = "finished"
) -> list[dict[str, Any]] | None:
    """Follow a run's events to the stream's end; the events, or None on an error."""
    began = time.perf_counter()
    events: list[dict[str, Any]] = []
    try:
        async with http.stream(
            "GET", f"/v1/agent-runs/{run_id}/events", params={"until": until}
        ) as response:
            if not response.is_success:
                await response.aread()
                shared.recorder.error("stream", began, f"{response.status_code} {response.text}")
                return None
            if shared.recorder.counts(began):
                shared.recorder.streams += 1
            async for body in sse_events(response.aiter_lines()):
                events.append(body)
                if shared.recorder.counts(time.perf_counter()):
                    shared.recorder.events += 1
    except httpx.HTTPError as exc:
        shared.recorder.error("stream", began, f"{type(exc).__name__}: {exc}")
        return None
    if not events:
        shared.recorder.error("stream", began, "the stream ended with no event")
        return None
    return events


async def approve_once(http: httpx.AsyncClient, shared: Shared) -> str | None:
    """Create a gated run, follow it until its step waits, approve that step as another
    person, follow the run to its end; the run's id, or None after an error (recorded)."""
    run = await _request(
        http,
        shared,
        "create (approval)",
        "POST",
        "/v1/agent-runs",
        json=noop_run(shared.label(), gated=True),
    )
    if run is None:
        return None
    run_id = str(run["id"])
    began = time.perf_counter()
    events = await follow(http, shared, run_id, until="waiting")
    if events is None:
        return None
    waiting = [e["step_id"] for e in events if e["type"] == "step.awaiting_approval"]
    if not waiting:
        shared.recorder.error("stream", began, f"waiting stream ended on {events[-1]['type']}")
        return None
    url = f"/v1/agent-runs/{run_id}/steps/{waiting[-1]}/approve"
    if await _request(http, shared, "approve", "POST", url, headers=APPROVER) is None:
        return None
    began = time.perf_counter()
    events = await follow(http, shared, run_id)
    if events is None:
        return None
    if events[-1]["type"] != "run.completed":
        shared.recorder.error("stream", began, f"run's stream ended on {events[-1]['type']}")
        return None
    return run_id


async def approver_loop(http: httpx.AsyncClient, shared: Shared) -> None:
    """Gated runs, one after another: create, wait (SSE), approve, follow to the end."""
    while not shared.stop.is_set():
        await approve_once(http, shared)


async def subscriber_loop(http: httpx.AsyncClient, shared: Shared) -> None:
    """Follow the newest run a client made to its last event, then the next newest."""
    followed = ""
    while not shared.stop.is_set():
        run_id = shared.run_ids[-1]
        if run_id == followed:  # no newer run yet
            await asyncio.sleep(NEWER_RUN_WAIT_S)
            continue
        followed = run_id
        began = time.perf_counter()
        events = await follow(http, shared, run_id)
        if events is not None and events[-1]["type"] not in TERMINAL_EVENTS:
            shared.recorder.error("stream", began, f"stream ended on {events[-1]['type']}")


@dataclass(frozen=True)
class Level:
    """How many tasks of each kind a measurement runs, and for how long."""

    clients: int
    approvers: int
    subscribers: int
    warmup_s: float
    seconds: float


def _client(base_url: str, connections: int, tls: ssl.SSLContext) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits, verify=tls
    )


async def _window(shared: Shared, level: Level, cpu_probe: Callable[[], float]) -> None:
    """Sample the servers' CPU time at the window's start and end, then stop the tasks."""
    await asyncio.sleep(level.warmup_s)
    shared.recorder.cpu_s = -cpu_probe()
    await asyncio.sleep(level.seconds)
    shared.recorder.cpu_s += cpu_probe()
    shared.stop.set()


async def run_level(
    base_urls: Sequence[str], level: Level, run_ids: list[str], cpu_probe: Callable[[], float]
) -> Recorder:
    """Run the mix at ``level`` against the servers (tasks spread over them in turn);
    ``cpu_probe`` says how much CPU time the servers have used so far."""
    # A connection pool per task: each task holds one kept-alive connection, as a real client
    # would, and no task waits on another's pool. The servers speak plain HTTP, but httpx
    # builds a TLS context per client unless given one: one shared context, made once.
    tls = ssl.create_default_context()
    tasks_needed = level.clients + level.approvers + level.subscribers
    clients = [_client(base_urls[i % len(base_urls)], 1, tls) for i in range(tasks_needed)]
    now = time.perf_counter()
    recorder = Recorder(now + level.warmup_s, now + level.warmup_s + level.seconds)
    shared = Shared(recorder, run_ids, made=len(run_ids))
    try:
        jobs = [client_loop(clients[i], shared, seed=i) for i in range(level.clients)]
        offset = level.clients
        jobs += [approver_loop(clients[offset + i], shared) for i in range(level.approvers)]
        offset += level.approvers
        jobs += [subscriber_loop(clients[offset + i], shared) for i in range(level.subscribers)]
        running = [asyncio.create_task(job) for job in jobs]
        await _window(shared, level, cpu_probe)
        # Clients finish their request in flight; a stream still open after the grace is cut.
        done, pending = await asyncio.wait(running, timeout=STREAM_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # a bug in a loop surfaces here, not as silence
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return recorder
