"""Approval decisions: the server's policy decides what runs without a person; a run's own rules
and flags may only add requirements, unless its creator may loosen the policy."""

from __future__ import annotations

from typing import Any

import pytest

from agent_engine.domain.approval_policy import (
    BUILTIN_DEFAULT,
    ApprovalInputs,
    ApprovalPolicy,
    ApprovalRule,
    CommandFacts,
    NamedPolicy,
    decide_approval,
    loosening_rules,
)

CONFINED = CommandFacts(executable="/usr/bin/pytest", confined=True)
UNCONFINED = CommandFacts(executable="/usr/bin/pytest", confined=False)


def rules(*items: dict[str, Any]) -> list[ApprovalRule]:
    return [ApprovalRule.model_validate(item) for item in items]


def server(*items: dict[str, Any]) -> NamedPolicy:
    return NamedPolicy(name="ci", rules=rules(*items))


def decide(
    step_type: str,
    input_data: dict[str, Any],
    *,
    explicit: bool | None = None,
    default: bool = True,
    policy: NamedPolicy = BUILTIN_DEFAULT,
    own: list[dict[str, Any]] | None = None,
    may_loosen: bool = False,
    command: CommandFacts | None = None,
    resolved: dict[str, str | None] | None = None,
) -> Any:
    inputs = ApprovalInputs(
        policy, ApprovalPolicy(rules=rules(*(own or []))), may_loosen, resolved or {}
    )
    return decide_approval(
        step_number=1,
        step_type=step_type,
        input_data=input_data,
        explicit=explicit,
        executor_default=default,
        inputs=inputs,
        command=command,
    )


AUTO_COMMANDS = {"step_type": "run_command", "action": "auto_approve"}


def test_a_runs_own_auto_approve_rule_is_loosening_and_the_step_still_waits() -> None:
    argv = {"argv": ["python3", "-c", "import os; os.system('id')"]}
    decision = decide("run_command", argv, own=[AUTO_COMMANDS], command=CONFINED)
    assert decision.requires is True
    assert decision.loosening is not None and decision.loosening.field == "approval_policy.rules.0"
    policy = ApprovalPolicy(rules=rules(AUTO_COMMANDS))
    assert [item.field for item in loosening_rules(policy)] == ["approval_policy.rules.0"]


def test_explicit_false_is_loosening_only_where_the_server_requires_approval() -> None:
    held = decide("run_command", {"argv": ["ls"]}, explicit=False, command=CONFINED)
    assert held.requires is True and held.loosening is not None
    assert held.loosening.field == "requires_approval"
    free = decide("read_file", {"path": "a"}, explicit=False, default=False)
    assert free.requires is False and free.loosening is None


def test_creator_with_the_privilege_may_loosen() -> None:
    decision = decide(
        "run_command", {"argv": ["ls"]}, own=[AUTO_COMMANDS], may_loosen=True, command=CONFINED
    )
    assert decision.requires is False and "may loosen" in decision.rule


def test_a_requirement_from_the_run_wins_over_the_servers_auto_approval() -> None:
    policy = server({"step_type": "edit_file", "action": "auto_approve"})
    own = [{"step_type": "edit_file", "path_not_under": "src", "action": "require_approval"}]
    inside = decide("edit_file", {"path": "src/a.py"}, policy=policy, own=own)
    outside = decide("edit_file", {"path": "docs/a.md"}, policy=policy, own=own)
    flagged = decide("edit_file", {"path": "src/a.py"}, policy=policy, explicit=True)
    assert (inside.requires, outside.requires, flagged.requires) == (False, True, True)
    assert inside.rule.startswith("policy ci rule 1:")
    assert outside.rule.startswith("run rule 1:")


def test_auto_approve_never_matches_a_command_that_leaves_the_workspace() -> None:
    policy = server({"step_type": "run_command", "argv0": "pytest", "action": "auto_approve"})
    inside = decide("run_command", {"argv": ["pytest", "tests"]}, policy=policy, command=CONFINED)
    outside = decide(
        "run_command", {"argv": ["pytest", "/elsewhere"]}, policy=policy, command=UNCONFINED
    )
    unknown = decide("run_command", {"argv": ["pytest"]}, policy=policy, command=None)
    assert (inside.requires, outside.requires, unknown.requires) == (False, True, True)


def test_executable_rules_match_the_resolved_program() -> None:
    policy = server({"step_type": "run_command", "executable": "pytest", "action": "auto_approve"})
    resolved = {"pytest": "/usr/bin/pytest"}
    same = decide(
        "run_command", {"argv": ["pytest"]}, policy=policy, command=CONFINED, resolved=resolved
    )
    other = decide(
        "run_command",
        {"argv": ["pytest"]},
        policy=policy,
        command=CommandFacts("/tmp/evil/pytest", True),
        resolved=resolved,
    )
    assert (same.requires, other.requires) == (False, True)


@pytest.mark.parametrize(
    ("argv", "requires"),
    [
        (["git", "status"], False),
        (["git", "status", "--short"], False),
        (["git", "push"], True),  # argv_prefix does not hold
        (["git", "status", "--porcelain"], True),  # a forbidden flag
        (["git", "status", "--porcelain=v2"], True),  # flag=value counts too
    ],
)
def test_argv_prefix_and_forbidden_flags(argv: list[str], requires: bool) -> None:
    rule = {
        "step_type": "run_command",
        "argv0": "git",
        "argv_prefix": ["status"],
        "forbidden_flags": ["--porcelain"],
        "action": "auto_approve",
    }
    decision = decide("run_command", {"argv": argv}, policy=server(rule), command=CONFINED)
    assert decision.requires is requires


def test_a_path_decided_later_is_never_auto_approved() -> None:
    policy = server(
        {"step_type": "edit_file", "path_not_under": "secrets", "action": "auto_approve"}
    )
    later = decide("edit_file", {"path": {"$ref": "steps.1.output.text"}}, policy=policy)
    now = decide("edit_file", {"path": "src/a.py"}, policy=policy)
    assert (later.requires, now.requires) == (True, False)
