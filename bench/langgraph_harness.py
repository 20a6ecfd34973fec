"""LangGraph under the sequential workload, as the reference the issue names for per-step overhead.

A ``StateGraph`` of N no-op nodes in a chain, compiled with LangGraph's PostgreSQL checkpointer
(``PostgresSaver``), invoked with ``durability="sync"``: each node's checkpoint is committed before
the next node runs, the guarantee closest to ours (a step's result is durable before the run goes
on). One graph invocation per run, one at a time, in this process; PostgreSQL only.
"""

from __future__ import annotations

import time
import uuid
from importlib.metadata import version
from typing import Any, TypedDict

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph

from bench.databases import BenchDatabase
from bench.results import SequentialResult
from bench.stats import StepLatencies

ERRORS: tuple[type[BaseException], ...] = (psycopg.Error,)  # a failed LangGraph measurement


class _State(TypedDict):
    value: int


def _noop(state: _State) -> _State:
    return {"value": state["value"] + 1}


def _chain(steps: int) -> StateGraph[Any]:
    graph = StateGraph(_State)
    previous = START
    for number in range(steps):
        name = f"step_{number + 1}"
        graph.add_node(name, _noop)
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph


def langgraph_version() -> str:
    return (
        f"LangGraph {version('langgraph')} with langgraph-checkpoint-postgres "
        f"{version('langgraph-checkpoint-postgres')} (PostgresSaver, durability=sync)"
    )


def measure_sequential(db: BenchDatabase, *, runs: int, steps: int) -> SequentialResult:
    """``runs`` invocations of a chain of ``steps`` no-op nodes, one at a time."""
    if db.backend != "postgres":
        raise RuntimeError("the LangGraph reference runs on PostgreSQL only")
    run_ms: list[float] = []
    with PostgresSaver.from_conn_string(db.dbos_url) as saver:
        saver.setup()
        graph = _chain(steps).compile(checkpointer=saver)

        def invoke() -> float:
            config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
            started = time.perf_counter()
            final = graph.invoke({"value": 0}, config, durability="sync")
            elapsed = (time.perf_counter() - started) * 1000
            if final["value"] != steps:
                raise RuntimeError(f"LangGraph ran {final['value']} of {steps} nodes")
            return elapsed

        invoke()  # warm-up: connection, prepared statements
        run_ms = [invoke() for _ in range(runs)]
    return SequentialResult(runs, steps, run_ms, StepLatencies.of([]))
