"""The operator's policies file: read once, and a mistake is one line naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_engine.access_errors import UnknownPolicyError
from agent_engine.engine.policies import load_policy_catalog
from agent_engine.errors import PolicyFileError

GOOD = """
policies:
  ci-tests:
    description: tests in the workspace run without a person
    rules:
      - step_type: run_command
        executable: pytest
        forbidden_flags: ["-p", "--pyargs"]
        action: auto_approve
"""


def test_named_policies_load_beside_the_builtin_default(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(GOOD)
    catalog = load_policy_catalog(path)
    assert sorted(catalog.policies) == ["ci-tests", "default"]
    rule = catalog.get("ci-tests").rules[0]
    assert (rule.executable, rule.forbidden_flags) == ("pytest", ["-p", "--pyargs"])
    assert catalog.get("default").rules == []


def test_no_file_means_only_the_default() -> None:
    assert list(load_policy_catalog(None).policies) == ["default"]


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(UnknownPolicyError, match="known: default"):
        load_policy_catalog(None).get("nope")


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (GOOD.replace("auto_approve", "approve_all"), "policies.ci-tests.rules.0.action"),
        (GOOD.replace("executable", "executabel"), "policies.ci-tests.rules.0.executabel"),
        (GOOD.replace("ci-tests", "CI Tests"), "'CI Tests' (policy name)"),
        ("policies: [1, 2]", "policies"),
        ("policies:\n  a: {rules: [{step_type: x}]}", "policies.a.rules.0.action"),
        ("policies: {a: {rules: [\n", "not valid YAML at line"),
    ],
)
def test_a_mistake_is_one_line_naming_the_file_and_the_field(
    tmp_path: Path, content: str, field: str
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(content)
    with pytest.raises(PolicyFileError) as caught:
        load_policy_catalog(path)
    detail = caught.value.detail
    assert detail.startswith(f"policies file {path}: ") and "\n" not in detail
    assert field in detail


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot be read"):
        load_policy_catalog(tmp_path / "absent.yaml")
