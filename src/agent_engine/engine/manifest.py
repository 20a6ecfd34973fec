"""A run's manifest: everything besides its records that its outcome depended on, in one
document with its own hash (``GET /v1/agent-runs/{id}/manifest``, docs/determinism.md).

The engine and executor versions, the interpreter and database, the models with their sampling
parameters, routing decisions and prices, the plan versions and their hashes, the MCP servers and
tool schemas the run used, the approval policy, the workspace, and where nondeterminism entered
each step (the clock readings it used, seeds, the environment names a command received).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from typing import Any

import agent_engine
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.records import RunRecord, StepRecord
from agent_engine.engine.context import EngineContext
from agent_engine.executors.base import Executor
from agent_engine.executors.mcp_config import McpServers
from agent_engine.executors.mcp_servers import describe_server
from agent_engine.storage.database import read_transaction
from agent_engine.storage.ledger import list_calls_txn
from agent_engine.storage.run_reads import plan_versions_txn
from agent_engine.storage.runs import load_run_txn, load_steps_txn
from agent_engine.storage.tables import LLMCall, PlanVersion

MANIFEST_FORMAT = 1
HASH_FIELD = "manifest_hash"


async def run_manifest(ctx: EngineContext, run_id: str) -> dict[str, Any]:
    """The manifest of run ``run_id`` (NotFoundError for an unknown run), ``manifest_hash``
    being the content hash of the rest of it."""
    async with read_transaction(ctx.sessions) as session:
        run = await load_run_txn(session, run_id)
        steps = await load_steps_txn(session, run.id)
        calls = await list_calls_txn(session, run.id)
        plans = await plan_versions_txn(session, run.id)
    numbers = {step.id: step.step_number for step in steps}
    manifest: dict[str, Any] = {
        "manifest_format": MANIFEST_FORMAT,
        "run_id": str(run.id),
        "engine": {
            "name": "agent-engine",
            "version": agent_engine.__version__,
            "python": platform.python_version(),
            "database": ctx.db.dialect.name,
        },
        "executors": _executors(ctx, steps),
        "workspace": run.workspace,
        "approval_policy": _approval_policy(run),
        "plan_hash": run.plan_hash,
        "plans": [_plan(plan) for plan in plans],
        "models": _models(calls),
        "llm_calls": [_call(call, numbers) for call in calls],
        "mcp_servers": _mcp_servers(ctx.limits.mcp_servers, steps),
        "steps": [_step(step, calls) for step in steps],
    }
    manifest[HASH_FIELD] = content_hash(manifest)
    return manifest


def manifest_hash(manifest: dict[str, Any]) -> str:
    """What ``manifest_hash`` must be: the content hash of the manifest without it."""
    return content_hash({k: v for k, v in manifest.items() if k != HASH_FIELD})


def executor_version(executor: Executor[Any, Any]) -> str:
    """The executor's declared version, else that of the distribution shipping its module."""
    if executor.version is not None:
        return executor.version
    package = type(executor).__module__.partition(".")[0]
    if package == "agent_engine":
        return agent_engine.__version__
    for distribution in packages_distributions().get(package, []):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "unknown"


def _executors(ctx: EngineContext, steps: Sequence[StepRecord]) -> list[dict[str, Any]]:
    used = sorted({step.step_type for step in steps})
    found = []
    for name in used:
        executor = ctx.registry.get(name)
        found.append(
            {
                "name": name,
                "version": executor_version(executor) if executor is not None else None,
                "side_effects": executor.side_effects if executor is not None else None,
            }
        )
    return found


def _approval_policy(run: RunRecord) -> dict[str, Any]:
    options = run.options
    return {
        "policy": options.get("policy"),
        "approval_policy": options.get("approval_policy"),
        "may_loosen_policy": options.get("may_loosen_policy", False),
        "plan_approval": options.get("plan_approval", False),
        "four_eyes": options.get("four_eyes", False),
    }


def _plan(plan: PlanVersion) -> dict[str, Any]:
    return {
        "version": plan.version,
        "plan_hash": plan.plan_hash,
        "source": plan.source,
        "created_by": plan.created_by,
        "created_at": plan.created_at.isoformat(),
    }


def sampling_of(request: dict[str, Any]) -> dict[str, Any]:
    """The parameters that shape a model's answer, from a recorded request: temperature, the
    output limit, the JSON schema's hash, and the seed the provider was sent (if any)."""
    schema = request.get("json_schema")
    return {
        "temperature": request.get("temperature"),
        "max_output_tokens": request.get("max_output_tokens"),
        "json_schema_hash": content_hash(schema) if schema is not None else None,
        "seed": _sent_seed(request),
    }


def _sent_seed(request: dict[str, Any]) -> Any:
    wire = request.get("wire")
    body = wire.get("body") if isinstance(wire, dict) else None
    if not isinstance(body, str):
        return None
    try:
        sent = json.loads(body)
    except ValueError:
        return None
    return sent.get("seed") if isinstance(sent, dict) else None


def _model_id(call: LLMCall) -> str:
    return f"{call.provider}:{call.model}"


def _models(calls: Sequence[LLMCall]) -> list[dict[str, Any]]:
    """Each model the run called: its calls, the sampling parameters used, and the price it was
    charged at (the routing decision's price snapshot and the recorded price source)."""
    by_model: dict[str, dict[str, Any]] = {}
    for call in calls:
        model_id = _model_id(call)
        entry = by_model.setdefault(
            model_id,
            {
                "id": model_id,
                "provider": call.provider,
                "model": call.model,
                "calls": 0,
                "sampling": [],
                "price_sources": [],
                "price": None,
            },
        )
        entry["calls"] += 1
        sampling = sampling_of(call.request)
        if sampling not in entry["sampling"]:
            entry["sampling"].append(sampling)
        if call.price_source is not None and call.price_source not in entry["price_sources"]:
            entry["price_sources"].append(call.price_source)
        snapshot = (call.routing or {}).get("price_snapshot", {}).get(model_id)
        if entry["price"] is None and snapshot is not None:
            entry["price"] = snapshot  # {"source": …, "rates": per-million-token USD}
    return [by_model[key] for key in sorted(by_model)]


def _call(call: LLMCall, numbers: dict[Any, int]) -> dict[str, Any]:
    return {
        "id": str(call.id),
        "step_number": numbers.get(call.step_id) if call.step_id is not None else None,
        "purpose": call.purpose,
        "model": _model_id(call),
        "attempt": call.attempt,
        "request_hash": call.request_hash,
        "response_hash": call.response_hash,
        "sampling": sampling_of(call.request),
        "error": call.error,
        "replayed": call.replayed,
        "routing": call.routing,
    }


def _mcp_servers(servers: McpServers, steps: Sequence[StepRecord]) -> list[dict[str, Any]]:
    """The MCP servers the run's steps called, each with the schemas of the tools used."""
    used: dict[str, set[str]] = {}
    for step in steps:
        if step.step_type != "mcp_tool":
            continue
        data = step.resolved_input or step.input_data
        server, tool = data.get("server"), data.get("tool")
        if isinstance(server, str) and isinstance(tool, str):
            used.setdefault(server, set()).add(tool)
    found = []
    for name in sorted(used):
        config = servers.servers.get(name)
        listing = servers.listings.get(name)
        tools = []
        for tool_name in sorted(used[name]):
            info = servers.tool(name, tool_name)
            tools.append(
                {
                    "name": tool_name,
                    "input_schema": info.input_schema if info is not None else None,
                    "input_schema_hash": content_hash(info.input_schema) if info else None,
                    "read_only": info.read_only if info is not None else None,
                }
            )
        found.append(
            {
                "name": name,
                "server": describe_server(config) if config is not None else None,
                "listing_error": listing.error if listing is not None else None,
                "tools": tools,
            }
        )
    return found


def _step(step: StepRecord, calls: Sequence[LLMCall]) -> dict[str, Any]:
    """A step's hashes and the nondeterminism recorded where it entered the step."""
    output = step.output_data or {}
    clock = []
    if isinstance(output.get("started_at"), str) and step.step_type == "run_command":
        clock.append({"what": "command started", "at": output["started_at"]})
    seeds = [
        seed
        for call in calls
        if call.step_id == step.id and (seed := _sent_seed(call.request)) is not None
    ]
    env_keys = output.get("env_keys") if step.step_type == "run_command" else None
    return {
        "step_number": step.step_number,
        "step_type": step.step_type,
        "status": step.status,
        "input_hash": step.input_hash,
        "output_hash": step.output_hash,
        "nondeterminism": {
            "clock_readings": clock,
            "seeds": seeds,
            "environment_keys": env_keys,
        },
    }
