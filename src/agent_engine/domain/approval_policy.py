"""Which steps wait for a human: the server's named policy, the run's own rules, explicit flags.

The server's policy (chosen by name at creation) and the executor defaults decide what may run
without a person. A run's own rules and ``requires_approval`` flags may only add requirements;
anything that would let a step run that the server's policy holds for a person is loosening,
refused unless the run's creator holds the policy privilege.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

POLICY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
DEFAULT_POLICY = "default"


@dataclass(frozen=True)
class CommandFacts:
    """What the engine found out about a run_command step before its rules are matched.

    ``executable`` is the real path argv[0] resolves to (None: not resolvable or not literal);
    ``confined`` says every argument is literal, stays inside the workspace and widens nothing
    (see the command analysis); an auto_approve rule never matches an unconfined command.
    """

    executable: str | None
    confined: bool


class ApprovalRule(BaseModel):
    """One rule; every condition given must hold for it to match."""

    model_config = ConfigDict(extra="forbid")

    step_type: str = Field(min_length=1)
    action: Literal["auto_approve", "require_approval"]
    executable: str | None = Field(
        default=None,
        min_length=1,
        description="run_command: the program, as an absolute path or an allowlist name, "
        "matched by the real path both resolve to",
    )
    argv0: str | None = Field(
        default=None, min_length=1, description="run_command: basename of argv[0]"
    )
    argv_prefix: list[str] | None = Field(
        default=None, max_length=50, description="run_command: the arguments after the program"
    )
    forbidden_flags: list[str] | None = Field(
        default=None,
        max_length=100,
        description="run_command: an argument equal to one, or starting with 'flag=', defeats "
        "the rule",
    )
    path_under: str | None = Field(default=None, description="path is inside this folder")
    path_not_under: str | None = Field(default=None, description="path is outside this folder")

    def matches(
        self,
        step_type: str,
        input_data: dict[str, Any],
        command: CommandFacts | None = None,
        resolved: Mapping[str, str | None] | None = None,
    ) -> bool:
        """Whether the rule applies; ``resolved`` maps rule executables to their real paths."""
        if step_type != self.step_type:
            return False
        auto = self.action == "auto_approve"
        if not self._command_matches(input_data, command, resolved or {}, auto):
            return False
        path = input_data.get("path")
        if auto and (self.path_under or self.path_not_under) and not isinstance(path, str):
            return False  # a path decided later (a $ref) is never approved in advance
        if self.path_under is not None and not _is_under(path, self.path_under):
            return False
        return not (self.path_not_under is not None and _is_under(path, self.path_not_under))

    def _command_matches(
        self,
        input_data: dict[str, Any],
        command: CommandFacts | None,
        resolved: Mapping[str, str | None],
        auto: bool,
    ) -> bool:
        argv = input_data.get("argv")
        conditions = (self.executable, self.argv0, self.argv_prefix, self.forbidden_flags)
        if all(c is None for c in conditions) and not (auto and "argv" in input_data):
            return True
        if not (isinstance(argv, list) and argv):
            return False
        # An auto-approval holds only for a command that stays inside the workspace.
        if auto and (command is None or not command.confined):
            return False
        if self.executable is not None:
            wanted = resolved.get(self.executable)
            if wanted is None or command is None or command.executable != wanted:
                return False
        if self.argv0 is not None and not (
            isinstance(argv[0], str) and posixpath.basename(argv[0]) == self.argv0
        ):
            return False
        if self.argv_prefix is not None and argv[1 : len(self.argv_prefix) + 1] != self.argv_prefix:
            return False
        flags = self.forbidden_flags or []
        return not any(
            isinstance(arg, str) and (arg in flags or any(arg.startswith(f + "=") for f in flags))
            for arg in argv[1:]
        )

    def describe(self, where: str) -> str:
        conditions = [f"step_type={self.step_type}"]
        for name in ("executable", "argv0", "argv_prefix", "forbidden_flags"):
            value = getattr(self, name)
            if value is not None:
                conditions.append(f"{name}={value}")
        for name in ("path_under", "path_not_under"):
            value = getattr(self, name)
            if value is not None:
                conditions.append(f"{name}={value}")
        return f"{where}: {' '.join(conditions)} -> {self.action}"


class ApprovalPolicy(BaseModel):
    """A run's own rules, checked in order; the first that matches decides."""

    model_config = ConfigDict(extra="forbid")

    rules: list[ApprovalRule] = Field(default_factory=list, max_length=100)


class NamedPolicy(BaseModel):
    """A server policy an operator defines and a run chooses by name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=POLICY_NAME_PATTERN)
    description: str = ""
    rules: list[ApprovalRule] = Field(default_factory=list, max_length=200)


BUILTIN_DEFAULT = NamedPolicy(
    name=DEFAULT_POLICY,
    description="Executor defaults: edit_file and run_command wait for a person.",
)


def _is_under(path: Any, folder: str) -> bool:
    if not isinstance(path, str):
        return False
    normalized = posixpath.normpath(path.lstrip("/"))
    prefix = posixpath.normpath(folder.strip("/"))
    return normalized == prefix or normalized.startswith(prefix + "/")


@dataclass(frozen=True)
class Loosening:
    """Something a run asked for that would let a step run the server holds for a person."""

    field: str
    message: str
    step_number: int | None = None


def loosening_rules(run_policy: ApprovalPolicy) -> list[Loosening]:
    """Every auto_approve rule among a run's own rules (only the server may auto-approve)."""
    return [
        Loosening(
            f"approval_policy.rules.{index}",
            f"approval_policy rule {index + 1} ({rule.step_type}) is auto_approve; a run's own "
            "rules may only add require_approval",
        )
        for index, rule in enumerate(run_policy.rules)
        if rule.action == "auto_approve"
    ]


@dataclass(frozen=True)
class ApprovalDecision:
    requires: bool
    rule: str  # recorded with the step: what decided
    loosening: Loosening | None = None  # set when the run's own input loosened the decision


@dataclass(frozen=True)
class ApprovalInputs:
    """Everything that decides approval for one run's plan."""

    server: NamedPolicy
    run: ApprovalPolicy
    may_loosen: bool = False
    # Each rule executable (by its text) and its real path; the engine resolves them.
    resolved: Mapping[str, str | None] | None = None


def _first_match(
    rules: list[ApprovalRule],
    step_type: str,
    input_data: dict[str, Any],
    command: CommandFacts | None,
    resolved: Mapping[str, str | None] | None,
) -> tuple[int, ApprovalRule] | None:
    for index, rule in enumerate(rules, start=1):
        if rule.matches(step_type, input_data, command, resolved):
            return index, rule
    return None


def decide_approval(
    *,
    step_number: int,
    step_type: str,
    input_data: dict[str, Any],
    explicit: bool | None,
    executor_default: bool,
    inputs: ApprovalInputs,
    command: CommandFacts | None = None,
) -> ApprovalDecision:
    """Whether the step needs approval and what decided it (recorded with the step).

    A requirement from anyone wins; otherwise the server's policy (its first matching rule, else
    the executor's default) decides, and a run that asks for less gets ``loosening`` set: the
    step is held for a person unless the creator may loosen the policy.
    """
    own = _first_match(inputs.run.rules, step_type, input_data, command, inputs.resolved)
    if own is not None and own[1].action == "require_approval":
        return ApprovalDecision(True, own[1].describe(f"run rule {own[0]}"))
    if explicit is True:
        return ApprovalDecision(True, "requires_approval=true in the plan")
    server = _first_match(inputs.server.rules, step_type, input_data, command, inputs.resolved)
    if server is not None:
        requires = server[1].action == "require_approval"
        reason = server[1].describe(f"policy {inputs.server.name} rule {server[0]}")
    else:
        requires = executor_default
        state = "requires" if requires else "does not require"
        reason = f"policy {inputs.server.name}: {step_type} {state} approval by default"
        if explicit is False and not requires:
            reason = "requires_approval=false in the plan"
    if not requires:
        return ApprovalDecision(False, reason)
    if own is not None:  # an auto_approve rule of the run's own
        asked, field = own[1].describe(f"run rule {own[0]}"), f"approval_policy.rules.{own[0] - 1}"
    elif explicit is False:
        asked, field = "requires_approval=false in the plan", "requires_approval"
    else:
        return ApprovalDecision(True, reason)
    if inputs.may_loosen:
        return ApprovalDecision(False, f"{asked} (creator may loosen the policy)")
    loosening = Loosening(
        field,
        f"step {step_number}: {asked} would loosen {reason}",
        step_number=step_number,
    )
    return ApprovalDecision(True, f"{reason}; {asked} ignored", loosening)
