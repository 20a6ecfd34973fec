"""The revision conversation: bounded outputs, the answer's shape, and the offline model's
deterministic revisions (with and without ``propose_edit`` in the catalog)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_engine.errors import ProviderError
from agent_engine.llm.base import CompletionRequest, CompletionResponse, Usage
from agent_engine.llm.offline import OfflineProvider
from agent_engine.llm.planning import parse_revision_answer
from agent_engine.llm.revision_prompts import (
    REVISION_SCHEMA,
    bound_output,
    bounded_steps,
    build_revision_messages,
    parse_revision_prompt,
)

FAILED = (
    "F...\n=== FAILURES ===\n" + "x" * 10_000 + "\ntests/test_models.py:7: AssertionError\n"
    "FAILED tests/test_models.py::test_value - assert 10.0 == 11.0\n1 failed, 3 passed\n"
)
CATALOG = [
    {"step_type": name, "input_schema": {}}
    for name in ("read_file", "run_command", "analyze", "summarize", "edit_file")
]


def test_a_long_output_keeps_its_first_and_last_lines_and_says_it_was_cut() -> None:
    shown, cut = bound_output({"exit_code": 1, "stdout": FAILED}, 2000)
    assert cut
    assert len(json.dumps(shown)) < 2200
    assert shown["stdout"].startswith("F...")
    assert "FAILED tests/test_models.py::test_value" in shown["stdout"]
    assert "characters cut" in shown["stdout"]
    assert bound_output({"exit_code": 0}, 2000) == ({"exit_code": 0}, False)


def test_outputs_over_the_total_leave_out_the_oldest_first() -> None:
    steps = [{"step_number": n, "output": {"text": "y" * 900}} for n in (1, 2, 3)]
    shown = bounded_steps(steps, per_output=1000, total=2000)
    assert "omitted" in shown[0]["output"] and shown[0]["output_truncated"]
    assert shown[1]["output"] == steps[1]["output"] and shown[2]["output"] == steps[2]["output"]


def _response(value: Any) -> CompletionResponse:
    return CompletionResponse(text=json.dumps(value), usage=Usage(), provider="t", model="m")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"decision": "maybe", "steps": []}, "not one of"),
        ({"decision": "revise", "steps": []}, "at least one step"),
        (
            {"decision": "continue", "steps": [{"step_type": "noop", "input_data": {}}]},
            "gives no steps",
        ),
        ({"steps": []}, "decision"),
    ],
)
def test_a_malformed_revision_answer_is_refused_naming_the_problem(
    answer: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProviderError) as info:
        parse_revision_answer(_response(answer))
    assert message in info.value.detail


def test_a_revision_answer_is_normalised_and_drops_requires_approval() -> None:
    step = {"step_type": "noop", "input_data": {}, "requires_approval": False, "depends_on": [1]}
    answer = parse_revision_answer(_response({"decision": "revise", "steps": [step]}))
    assert answer == {
        "decision": "revise",
        "steps": [{"step_type": "noop", "input_data": {}, "depends_on": [1]}],
        "rationale": "",
    }


def _run_so_far(*, exit_code: int, edited: bool = False) -> list[dict[str, Any]]:
    listing = {"files": [{"path": p} for p in ("tests/test_models.py", "inventory/models.py")]}
    steps: list[dict[str, Any]] = [
        {"step_number": 1, "step_type": "list_files", "status": "completed", "output": listing},
        {
            "step_number": 2,
            "step_type": "run_command",
            "status": "completed",
            "input_data": {"argv": ["python3", "-m", "pytest", "-q"]},
            "output": {"exit_code": 1, "stdout": FAILED, "stderr": ""},
        },
    ]
    if edited:
        steps += [
            {"step_number": 3, "step_type": "edit_file", "status": "completed"},
            {
                "step_number": 4,
                "step_type": "run_command",
                "status": "completed",
                "input_data": {"argv": ["python3", "-m", "pytest", "-q"]},
                "output": {"exit_code": exit_code, "stdout": "", "stderr": ""},
            },
            {"step_number": 5, "step_type": "summarize", "status": "pending", "replaceable": True},
        ]
    return steps


def _ask(steps: list[dict[str, Any]], after: int, catalog: list[dict[str, Any]]) -> Any:
    bounded = bounded_steps(steps, 4000, 60_000)
    revision = {"after_step": after, "next_step_number": len(steps) + 1}
    messages = build_revision_messages("Fix the failing test", bounded, revision, catalog)
    assert parse_revision_prompt(messages).revision == revision
    request = CompletionRequest(messages=messages, json_schema=REVISION_SCHEMA)
    return OfflineProvider().answer(request, "offline-1").json_value


def test_offline_reads_what_the_failure_names_and_the_module_its_tests_cover() -> None:
    answer = _ask(_run_so_far(exit_code=1), 2, CATALOG)
    assert answer["decision"] == "revise"
    assert [s["input_data"]["path"] for s in answer["steps"]] == [
        "tests/test_models.py",
        "inventory/models.py",
    ]


FIXABLE = "def price(item):\n    try:\n        return item.price\n    except:\n        return 0\n"


def _after_reads(module: str = FIXABLE) -> list[dict[str, Any]]:
    steps = _run_so_far(exit_code=1)
    contents = {"tests/test_models.py": "def test_price():\n    assert True\n"}
    for number, path in ((3, "tests/test_models.py"), (4, "inventory/models.py")):
        steps.append(
            {
                "step_number": number,
                "step_type": "read_file",
                "status": "completed",
                "input_data": {"path": path},
                "output": {"path": path, "content": contents.get(path, module)},
            }
        )
    return steps


def test_offline_proposes_an_edit_applied_by_ref_when_propose_edit_is_offered() -> None:
    catalog = [*CATALOG, {"step_type": "propose_edit", "input_schema": {}}]
    answer = _ask(_after_reads(), 4, catalog)
    assert answer["decision"] == "revise"
    steps = answer["steps"]
    assert [s["step_type"] for s in steps] == [
        "propose_edit",
        "edit_file",
        "run_command",
        "summarize",
    ]
    assert steps[0]["input_data"]["files"] == ["tests/test_models.py", "inventory/models.py"]
    assert steps[0]["input_data"]["inputs"][0] == {"$ref": "steps.2.output"}
    assert steps[1]["input_data"] == {"$ref": "steps.5.output.edit"}


def test_offline_analyzes_instead_when_no_step_proposes_edits() -> None:
    answer = _ask(_after_reads(), 4, CATALOG)
    assert [s["step_type"] for s in answer["steps"]] == ["analyze", "summarize"]


def test_offline_analyzes_instead_when_it_has_no_edit_for_the_files_read() -> None:
    # A wrong expected value is beyond what the offline model can fix for certain: it plans no
    # proposal it knows would fail.
    catalog = [*CATALOG, {"step_type": "propose_edit", "input_schema": {}}]
    answer = _ask(_after_reads(module="def price(item):\n    return item.price\n"), 4, catalog)
    assert [s["step_type"] for s in answer["steps"]] == ["analyze", "summarize"]
    assert "no edit it is sure of" in answer["rationale"]


def test_offline_says_the_goal_is_met_once_the_tests_pass_after_an_edit() -> None:
    assert _ask(_run_so_far(exit_code=0, edited=True), 4, CATALOG)["decision"] == "done"
    assert _ask(_run_so_far(exit_code=1, edited=True), 4, CATALOG)["decision"] == "continue"
