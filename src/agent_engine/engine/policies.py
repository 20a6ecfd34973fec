"""Named approval policies: loaded from the operator's file, chosen by runs, applied to plans.

The file (``AGENT_ENGINE_POLICIES_FILE``, YAML) is read once at start-up; a problem is one line
naming the file and the field. The built-in ``default`` policy holds what the executors hold
(edit_file and run_command wait for a person); the file may redefine it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_engine.access_errors import PolicyLooseningError, UnknownPolicyError
from agent_engine.domain.approval_policy import (
    BUILTIN_DEFAULT,
    DEFAULT_POLICY,
    ApprovalDecision,
    ApprovalInputs,
    ApprovalPolicy,
    ApprovalRule,
    CommandFacts,
    Loosening,
    NamedPolicy,
    decide_approval,
    loosening_rules,
)
from agent_engine.domain.plan import Plan, PlanStep
from agent_engine.errors import ExecutorError, PolicyFileError
from agent_engine.executors.base import ExecutionLimits, Executor
from agent_engine.executors.command_allowlist import resolve_executable, search_path
from agent_engine.executors.command_analysis import analyze_command
from agent_engine.executors.workspace import Workspace

MAX_POLICIES_FILE_BYTES = 1_048_576


class _PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    rules: list[ApprovalRule] = Field(default_factory=list, max_length=200)


class _PoliciesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: dict[str, _PolicyBody] = Field(default_factory=dict)


@dataclass(frozen=True)
class PolicyCatalog:
    """The server's named policies, by name (``default`` always among them)."""

    policies: Mapping[str, NamedPolicy] = field(
        default_factory=lambda: {DEFAULT_POLICY: BUILTIN_DEFAULT}
    )
    source: Path | None = None

    def get(self, name: str) -> NamedPolicy:
        """The policy called ``name``, or UnknownPolicyError listing the known names."""
        policy = self.policies.get(name)
        if policy is None:
            raise UnknownPolicyError(
                f"no approval policy named {name!r}; known: {', '.join(sorted(self.policies))}",
                errors=[{"field": "policy", "message": f"unknown policy {name!r}"}],
            )
        return policy


def _field_of(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def load_policy_catalog(path: Path | None) -> PolicyCatalog:
    """Read and validate the policies file (``None``: only the built-in ``default``)."""
    if path is None:
        return PolicyCatalog()
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_POLICIES_FILE_BYTES + 1)
    except OSError as exc:
        raise PolicyFileError(f"policies file {path}: cannot be read: {exc.strerror}") from exc
    if len(raw) > MAX_POLICIES_FILE_BYTES:
        raise PolicyFileError(f"policies file {path}: over {MAX_POLICIES_FILE_BYTES} bytes")
    try:
        document = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise PolicyFileError(f"policies file {path}: not valid YAML{where}") from exc
    try:
        parsed = _PoliciesFile.model_validate(document)
        policies = {
            name: NamedPolicy(name=name, description=body.description, rules=body.rules)
            for name, body in parsed.policies.items()
        }
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _field_of(first)
        if first["type"] == "string_pattern_mismatch":
            where = f"policies.{first['input']!r} (policy name)"
        raise PolicyFileError(f"policies file {path}: {where}: {first['msg']}") from exc
    return PolicyCatalog({DEFAULT_POLICY: BUILTIN_DEFAULT, **policies}, source=path)


def run_options(inputs: ApprovalInputs) -> dict[str, Any]:
    """The approval part of a run's options, as recorded: the resolved server policy too."""
    return {
        "policy": inputs.server.model_dump(mode="json"),
        "approval_policy": inputs.run.model_dump(mode="json"),
        "may_loosen_policy": inputs.may_loosen,
    }


def inputs_of_run(options: Mapping[str, Any]) -> ApprovalInputs:
    """The approval inputs recorded with a run (runs from before named policies: ``default``)."""
    server = options.get("policy")
    return ApprovalInputs(
        server=NamedPolicy.model_validate(server) if server else BUILTIN_DEFAULT,
        run=ApprovalPolicy.model_validate(options.get("approval_policy") or {}),
        may_loosen=bool(options.get("may_loosen_policy", False)),
    )


@dataclass(frozen=True)
class PlanApprovals:
    """Approval inputs plus what the engine found out about each command of one plan."""

    inputs: ApprovalInputs
    commands: Mapping[int, CommandFacts] = field(default_factory=dict)
    # What executors consult for their input-dependent default (e.g. MCP tool annotations).
    limits: ExecutionLimits | None = None

    def executor_default(self, spec: PlanStep, executor: Executor[Any, Any] | None) -> bool:
        """The step's approval default before any policy (an unknown step type: required)."""
        if executor is None:
            return True
        return executor.requires_approval_for(spec.input_data, self.limits)

    def decide(self, number: int, spec: PlanStep, executor_default: bool) -> ApprovalDecision:
        """The decision for step ``number`` (1-based) of the plan."""
        return decide_approval(
            step_number=number,
            step_type=spec.step_type,
            input_data=spec.input_data,
            explicit=spec.requires_approval,
            executor_default=executor_default,
            inputs=self.inputs,
            command=self.commands.get(number),
        )

    def loosenings(
        self, steps: Sequence[PlanStep], executors: Mapping[str, Executor[Any, Any]]
    ) -> list[Loosening]:
        """What the run asked for that loosens the server's policy (empty when it may)."""
        if self.inputs.may_loosen:
            return []
        found = loosening_rules(self.inputs.run)
        for number, spec in enumerate(steps, start=1):
            default = self.executor_default(spec, executors.get(spec.step_type))
            decision = self.decide(number, spec, default)
            if decision.loosening is not None:
                found.append(decision.loosening)
        return found


def refuse_loosening(found: list[Loosening]) -> None:
    """Raise PolicyLooseningError naming every rule and step at fault, if there is any."""
    if not found:
        return
    detail = "; ".join(item.message for item in found[:3])
    if len(found) > 3:
        detail += f"; and {len(found) - 3} more (see errors)"
    raise PolicyLooseningError(
        f"{detail} (only the server's named policies may let a step run without a person)",
        errors=[
            {"field": item.field, "message": item.message, "step_number": item.step_number}
            for item in found
        ],
    )


def _real_executable(program: str, limits: ExecutionLimits, workspace: Workspace) -> str | None:
    path = search_path(limits.command_env_passthrough)
    try:
        found = resolve_executable(program, limits.command_allowlist, path, workspace)
    except ExecutorError:
        return None
    return os.path.realpath(found)


def _facts(
    inputs: ApprovalInputs, plan: Plan, limits: ExecutionLimits, workspace: str | None
) -> PlanApprovals:
    if workspace is None:  # run_command needs a workspace: no command step can be in the plan
        return PlanApprovals(inputs, limits=limits)
    root = Workspace(Path(workspace))
    programs = {
        rule.executable
        for rule in (*inputs.server.rules, *inputs.run.rules)
        if rule.executable is not None
    }
    resolved = {program: _real_executable(program, limits, root) for program in programs}
    commands: dict[int, CommandFacts] = {}
    for number, spec in enumerate(plan.steps, start=1):
        argv = spec.input_data.get("argv")
        if spec.step_type != "run_command" or not isinstance(argv, list) or not argv:
            continue
        literal = [arg if isinstance(arg, str) else None for arg in argv]
        cwd = spec.input_data.get("cwd")
        analysis = analyze_command(literal, workspace, cwd if isinstance(cwd, str) else None)
        program = literal[0]
        commands[number] = CommandFacts(
            executable=_real_executable(program, limits, root) if program else None,
            confined=analysis.confined and (cwd is None or isinstance(cwd, str)),
        )
    return PlanApprovals(
        ApprovalInputs(inputs.server, inputs.run, inputs.may_loosen, resolved), commands, limits
    )


async def plan_approvals(
    inputs: ApprovalInputs, plan: Plan, limits: ExecutionLimits, workspace: str | None
) -> PlanApprovals:
    """Resolve the plan's programs and rule executables (file system look-ups, in a thread)."""
    if workspace is None or not any(s.step_type == "run_command" for s in plan.steps):
        # Nothing to look up: no thread hop on the common path.
        return PlanApprovals(inputs, limits=limits)
    return await asyncio.to_thread(_facts, inputs, plan, limits, workspace)


def list_policies(catalog: PolicyCatalog) -> list[NamedPolicy]:
    """The catalog's policies in name order."""
    return [catalog.policies[name] for name in sorted(catalog.policies)]
