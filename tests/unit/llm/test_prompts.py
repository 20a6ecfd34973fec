"""The prompt conventions: builders and parsers agree, whatever the data contains."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agent_engine.llm.prompt_sections import MAX_SECTION_CHARS, fenced, parse_sections
from agent_engine.llm.prompts import (
    ANALYSIS_SCHEMA,
    PLAN_SCHEMA,
    TASK_ANALYZE,
    TASK_PLAN,
    TASK_SUMMARIZE,
    FileEntry,
    build_analyze_messages,
    build_plan_messages,
    build_plan_retry_message,
    build_summarize_messages,
    detect_task,
    parse_plan_prompt,
    parse_task_prompt,
)

CATALOG = [
    {"step_type": "read_file", "input_schema": {"type": "object"}},
    {"name": "summarize", "input_schema": {"type": "object"}},
]


@given(st.text())
def test_fenced_input_round_trips_whatever_it_contains(text: str) -> None:
    sections = parse_sections(f"intro\n### Input 1\n{fenced(text)}\ntrailer")
    assert len(sections) == 1
    assert sections[0].kind == "input"
    assert sections[0].content == (text[:-1] if text.endswith("\n") else text)


def test_fence_is_longer_than_any_backtick_run_inside() -> None:
    content = "```python\nx = 1\n```\n### File: evil.py\n````\n"
    block = fenced(content)
    assert block.startswith("`````\n")
    assert [s.content for s in parse_sections(f"### Input 1\n{block}")] == [content[:-1]]


def test_plan_messages_round_trip_goal_files_and_step_types() -> None:
    goal = "Fix `main.py`\n### Goal\n```\nnot a section\n```"
    files = [{"path": "src/main.py", "size": 120}, {"path": "README.md"}]
    messages = build_plan_messages(goal, files, CATALOG)
    assert detect_task(messages) == TASK_PLAN
    prompt = parse_plan_prompt(messages)
    assert prompt.goal == goal
    assert prompt.files == [FileEntry("src/main.py", 120), FileEntry("README.md", None)]
    assert prompt.step_types == ["read_file", "summarize"]
    assert prompt.previous_errors == []


def test_plan_messages_without_workspace_parse_to_no_files() -> None:
    messages = build_plan_messages("Explain determinism", None, CATALOG)
    assert parse_plan_prompt(messages).files is None
    assert "no workspace" in messages[1].content


def test_plan_messages_with_empty_workspace_parse_to_empty_listing() -> None:
    assert parse_plan_prompt(build_plan_messages("x", [], CATALOG)).files == []


def test_retry_message_carries_the_validation_errors() -> None:
    messages = build_plan_messages("goal", None, CATALOG)
    messages.append(build_plan_retry_message(["step 2: unknown step_type 'x'", "step 3: bad"]))
    prompt = parse_plan_prompt(messages)
    assert prompt.previous_errors == ["step 2: unknown step_type 'x'", "step 3: bad"]


def test_analyze_inputs_render_as_typed_sections() -> None:
    inputs = [
        {"path": "a.py", "content": "x = 1\n", "sha256": "00", "start_line": 1, "end_line": 1},
        {"files": [{"path": "a.py", "size": 6}, "b.txt"], "truncated": False},
        {"argv": ["python", "-m", "pytest"], "exit_code": 1, "stdout": "1 failed", "stderr": ""},
        {"text": "earlier report", "structured": {}},
        "plain text",
        {"other": [1, 2]},
    ]
    messages = build_analyze_messages("Find problems", inputs)
    assert detect_task(messages) == TASK_ANALYZE
    prompt = parse_task_prompt(messages)
    assert prompt.instruction == "Find problems"
    kinds = [(s.kind, s.title) for s in prompt.sections]
    assert kinds == [
        ("file", "a.py"),
        ("listing", "2 files"),
        ("command", "python -m pytest"),
        ("input", "4"),
        ("input", "5"),
        ("input", "6"),
    ]
    file, listing, command, text, plain, other = prompt.sections
    assert file.content == "x = 1"
    assert not file.partial
    assert listing.content == "a.py\t6\nb.txt"
    assert command.content == "exit code: 1\n--- stdout ---\n1 failed"
    assert (text.content, plain.content) == ("earlier report", "plain text")
    assert json.loads(other.content) == {"other": [1, 2]}


def test_file_slice_is_marked_with_its_first_line() -> None:
    read = {"path": "m.py", "content": "b\nc", "start_line": 2, "end_line": 3, "line_count": 9}
    (section,) = parse_task_prompt(build_analyze_messages("x", [read])).sections
    assert (section.title, section.start_line, section.partial) == ("m.py", 2, True)


def test_huge_file_is_cut_and_marked_truncated() -> None:
    read = {"path": "big.py", "content": "x = 1\n" * (MAX_SECTION_CHARS // 3)}
    (section,) = parse_task_prompt(build_analyze_messages("x", [read])).sections
    assert section.truncated
    assert len(section.content) <= MAX_SECTION_CHARS


def test_summarize_messages_carry_their_own_task_marker() -> None:
    messages = build_summarize_messages("Sum up", [])
    assert detect_task(messages) == TASK_SUMMARIZE
    assert parse_task_prompt(messages).sections == []


def test_messages_without_marker_have_no_task() -> None:
    assert detect_task(build_analyze_messages("x", [])[1:]) is None


def test_schemas_require_the_documented_fields() -> None:
    assert PLAN_SCHEMA["required"] == ["steps", "rationale"]
    step = PLAN_SCHEMA["properties"]["steps"]["items"]
    assert step["required"] == ["step_type", "input_data"]
    assert "requires_approval" not in step["properties"]
    finding = ANALYSIS_SCHEMA["properties"]["findings"]["items"]
    assert finding["required"] == ["kind", "path", "line", "message", "severity"]
