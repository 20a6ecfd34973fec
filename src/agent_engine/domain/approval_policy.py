"""Which steps wait for a human: executor defaults, per-run rules, explicit per-step flags."""

from __future__ import annotations

import posixpath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApprovalRule(BaseModel):
    """One rule of a run's approval policy; every condition given must hold for it to match."""

    model_config = ConfigDict(extra="forbid")

    step_type: str = Field(min_length=1)
    action: Literal["auto_approve", "require_approval"]
    argv0: str | None = Field(default=None, description="run_command: basename of argv[0]")
    path_under: str | None = Field(default=None, description="path is inside this folder")
    path_not_under: str | None = Field(default=None, description="path is outside this folder")

    def matches(self, step_type: str, input_data: dict[str, Any]) -> bool:
        if step_type != self.step_type:
            return False
        if self.argv0 is not None:
            argv = input_data.get("argv")
            if not (isinstance(argv, list) and argv and isinstance(argv[0], str)):
                return False
            if posixpath.basename(argv[0]) != self.argv0:
                return False
        path = input_data.get("path")
        if self.path_under is not None and not _is_under(path, self.path_under):
            return False
        return not (self.path_not_under is not None and _is_under(path, self.path_not_under))

    def describe(self, index: int) -> str:
        conditions = [f"step_type={self.step_type}"]
        for name in ("argv0", "path_under", "path_not_under"):
            value = getattr(self, name)
            if value is not None:
                conditions.append(f"{name}={value}")
        return f"policy rule {index}: {' '.join(conditions)} -> {self.action}"


class ApprovalPolicy(BaseModel):
    """Rules checked in order; the first that matches decides, ahead of any other setting."""

    model_config = ConfigDict(extra="forbid")

    rules: list[ApprovalRule] = Field(default_factory=list, max_length=100)


def _is_under(path: Any, folder: str) -> bool:
    if not isinstance(path, str):
        return False
    normalized = posixpath.normpath(path.lstrip("/"))
    prefix = posixpath.normpath(folder.strip("/"))
    return normalized == prefix or normalized.startswith(prefix + "/")


def decide_approval(
    *,
    step_type: str,
    input_data: dict[str, Any],
    explicit: bool | None,
    executor_default: bool,
    policy: ApprovalPolicy,
) -> tuple[bool, str]:
    """Whether the step needs approval, and the rule that decided it (recorded with the step)."""
    for index, rule in enumerate(policy.rules, start=1):
        if rule.matches(step_type, input_data):
            return rule.action == "require_approval", rule.describe(index)
    if explicit is not None:
        return explicit, f"requires_approval={str(explicit).lower()} in the plan"
    state = "requires" if executor_default else "does not require"
    return executor_default, f"default: {step_type} {state} approval"
