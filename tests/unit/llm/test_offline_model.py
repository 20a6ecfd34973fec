"""The offline model: deterministic, networkless, and useful on the engine's own prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_engine.domain.plan import Plan
from agent_engine.llm.base import ChatMessage, CompletionRequest, CompletionResponse
from agent_engine.llm.offline import OfflineProvider
from agent_engine.llm.offline_analysis import LONG_FUNCTION_LINES
from agent_engine.llm.prompts import (
    ANALYSIS_SCHEMA,
    PLAN_SCHEMA,
    build_analyze_messages,
    build_plan_messages,
    build_summarize_messages,
)
from tests.network_guard import refuse_remote_connections

NOTICE = "_Produced by the offline model (deterministic, no LLM)._"
BUILTINS = ["list_files", "read_file", "analyze", "edit_file", "run_command", "summarize"]
CATALOG = [{"step_type": name, "input_schema": {"type": "object"}} for name in BUILTINS]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach beyond this machine fails the test."""
    refuse_remote_connections(monkeypatch, "the offline model")


def matches_schema(value: Any, schema: dict[str, Any]) -> bool:
    """A small JSON-schema check (type, enum, required, properties, items, minItems)."""
    types = schema.get("type")
    names = types if isinstance(types, list) else [types] if types else []
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if names and not any(checks[name](value) for name in names):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        if any(key not in value for key in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and set(value) - set(properties):
            return False
        return all(matches_schema(value[k], properties[k]) for k in value if k in properties)
    if isinstance(value, list):
        items = schema.get("items", {})
        return len(value) >= schema.get("minItems", 0) and all(
            matches_schema(item, items) for item in value
        )
    return True


def make_workspace(root: Path) -> list[dict[str, Any]]:
    """A small project like the example workspace; returns its listing as list_files gives it."""
    files = {
        "README.md": "# Demo\n\nA demo service that adds numbers. It has tests.\n",
        "pyproject.toml": '[project]\nname = "demo"\n',
        "src/demo/__init__.py": "",
        "src/demo/__main__.py": "from demo.core import add\nprint(add(1, 2))\n",
        "src/demo/core.py": '"""Core."""\n\n\ndef add(a, b):\n    return a + b\n' + "#\n" * 80,
        "src/demo/store.py": '"""Storage."""\n' + "X = 1\n" * 40,
        "src/demo/util.py": '"""Helpers."""\n',
        "tests/test_core.py": "from demo.core import add\ndef test_add():\n    assert add(1, 2)\n",
        "docs/guide.md": "Guide.\n",
        ".venv/lib/site.py": "x = 1\n" * 500,
    }
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    listing = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [{"path": path, "size": (root / path).stat().st_size} for path in listing]


async def ask(request: CompletionRequest) -> CompletionResponse:
    return await OfflineProvider().complete(request, "offline-1")


async def plan_for(
    goal: str, files: list[dict[str, Any]] | None, catalog: list[dict[str, Any]] = CATALOG
) -> dict[str, Any]:
    messages = build_plan_messages(goal, files, catalog)
    response = await ask(CompletionRequest(messages=messages, json_schema=PLAN_SCHEMA))
    assert json.loads(response.text) == response.json_value
    assert matches_schema(response.json_value, PLAN_SCHEMA)
    Plan.model_validate({"steps": response.json_value["steps"]})
    return dict(response.json_value)


async def test_same_request_gets_byte_identical_response(tmp_path: Path) -> None:
    files = make_workspace(tmp_path)
    request = CompletionRequest(messages=build_plan_messages("Analyze the code", files, CATALOG))
    first, second = await ask(request), await OfflineProvider().complete(request, "offline-1")
    assert first.model_dump_json() == second.model_dump_json()
    assert first.usage.estimated is False
    assert first.usage.input_tokens > 0
    assert first.usage.output_tokens > 0
    assert first.provider == "offline"
    assert first.raw["task"] == "plan"


def test_response_does_not_depend_on_hash_seed() -> None:
    script = (
        "import asyncio\n"
        "from agent_engine.llm.base import CompletionRequest\n"
        "from agent_engine.llm.offline import OfflineProvider\n"
        "from agent_engine.llm.prompts import build_analyze_messages\n"
        "src = 'import os, sys\\nimport json\\n# FIXME a\\ndef f():\\n    return sys\\n'\n"
        "inputs = [{'files': ['a.py', 'b.py', 'tests/test_b.py']},\n"
        "          {'path': 'a.py', 'content': src}]\n"
        "request = CompletionRequest(messages=build_analyze_messages('x', inputs))\n"
        "print(asyncio.run(OfflineProvider().complete(request, 'm')).model_dump_json())\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


async def test_plan_lists_reads_analyzes_tests_and_summarizes(tmp_path: Path) -> None:
    plan = await plan_for("Analyze the codebase and run the tests", make_workspace(tmp_path))
    steps = plan["steps"]
    types = [step["step_type"] for step in steps]
    assert types[0] == "list_files"
    assert types[-3:] == ["analyze", "run_command", "summarize"]
    reads = [step["input_data"]["path"] for step in steps if step["step_type"] == "read_file"]
    assert 1 <= len(reads) <= 6
    assert reads[:2] == ["README.md", "pyproject.toml"]
    assert {"src/demo/__main__.py", "src/demo/core.py", "tests/test_core.py"} <= set(reads)
    assert not any(path.startswith(".venv/") for path in reads)
    analyze = steps[types.index("analyze")]["input_data"]
    expected_refs = [{"$ref": f"steps.{n}.output"} for n in range(1, len(reads) + 2)]
    assert analyze["inputs"] == expected_refs
    command = steps[types.index("run_command")]
    assert command["input_data"] == {"argv": ["python", "-m", "pytest", "-q"]}
    assert command["optional"] is True
    assert "edit_file" not in types
    assert plan["source"] == "offline"
    assert "README.md" in plan["rationale"]


async def test_plan_without_test_wording_runs_no_command(tmp_path: Path) -> None:
    plan = await plan_for("Suggest improvements", make_workspace(tmp_path))
    types = [step["step_type"] for step in plan["steps"]]
    assert "run_command" not in types
    assert plan["steps"][-1]["input_data"]["inputs"] == [{"$ref": f"steps.{len(types) - 1}.output"}]


async def test_plan_reads_a_file_the_goal_names_first(tmp_path: Path) -> None:
    plan = await plan_for("Fix the bug in store.py", make_workspace(tmp_path))
    assert plan["steps"][1]["input_data"] == {"path": "src/demo/store.py"}
    assert "edit_file" not in [step["step_type"] for step in plan["steps"]]
    assert "no edit_file step" in plan["rationale"]


async def test_plan_uses_only_offered_step_types(tmp_path: Path) -> None:
    catalog = [entry for entry in CATALOG if entry["step_type"] != "run_command"]
    plan = await plan_for("Run the tests", make_workspace(tmp_path), catalog)
    assert "run_command" not in [step["step_type"] for step in plan["steps"]]


async def test_plan_without_workspace_analyzes_and_summarizes_the_goal() -> None:
    plan = await plan_for("Explain replay", None)
    assert [step["step_type"] for step in plan["steps"]] == ["analyze", "summarize"]
    assert plan["steps"][0]["input_data"]["instruction"] == "Explain replay"
    assert plan["steps"][1]["input_data"]["inputs"] == [{"$ref": "steps.1.output"}]


def test_planning_a_thousand_file_listing_reads_few_files_deterministically() -> None:
    files = [{"path": f"src/pkg{i % 25}/module_{i}.py", "size": 100 + i} for i in range(1000)]
    request = CompletionRequest(
        messages=build_plan_messages("Analyze the code and its tests", files, CATALOG),
        json_schema=PLAN_SCHEMA,
    )
    provider = OfflineProvider()
    answers = [provider.answer(request, "offline-1") for _ in range(2)]
    assert answers[0].text == answers[1].text
    plan = answers[0].json_value
    reads = [s for s in plan["steps"] if s["step_type"] == "read_file"]
    assert 1 <= len(reads) <= 6
    # the largest sources are among the files read
    assert "src/pkg24/module_999.py" in {s["input_data"]["path"] for s in reads}


LONG_BODY = "".join(f"    total += {i}\n" for i in range(LONG_FUNCTION_LINES + 5))
SOURCE = (
    '"""Module."""\n'  # 1
    "from __future__ import annotations\n"  # 2
    "import os\n"  # 3
    "import sys\n"  # 4
    "try:\n"  # 5
    "    import yaml\n"  # 6
    "except ImportError:\n"  # 7
    "    yaml = None\n"  # 8
    "__all__ = ['exported']\n"  # 9
    "from json import loads as exported\n"  # 10
    "\n"  # 11
    "def compute(total):\n"  # 12
    "    # TODO: handle negatives\n" + LONG_BODY + "    return total + len(sys.argv)\n"  # 13
)


async def analysis(inputs: list[Any], instruction: str = "Review") -> CompletionResponse:
    messages = build_analyze_messages(instruction, inputs)
    return await ask(CompletionRequest(messages=messages, json_schema=ANALYSIS_SCHEMA))


def by_kind(response: CompletionResponse, kind: str) -> list[dict[str, Any]]:
    return [f for f in response.json_value["findings"] if f["kind"] == kind]


async def test_analyze_finds_problems_at_their_lines() -> None:
    listing = {"files": [{"path": p} for p in ("src/calc.py", "src/io.py", "tests/test_io.py")]}
    response = await analysis(
        [
            listing,
            {"path": "src/calc.py", "content": SOURCE},
            {"path": "src/broken.py", "content": "x = 1\ndef f(:\n    pass\n"},
        ]
    )
    assert by_kind(response, "unused_import") == [
        {
            "kind": "unused_import",
            "path": "src/calc.py",
            "line": 3,
            "message": "`os` is imported but never used",
            "severity": "warning",
            "suggestion": "Delete line 3 (`import os`): nothing uses it.",
            "count": 1,
        }
    ]
    (long_function,) = by_kind(response, "long_function")
    assert long_function["line"] == 12
    assert f"`compute` is {LONG_FUNCTION_LINES + 8} lines" in long_function["message"]
    (todo,) = by_kind(response, "todo")
    assert (todo["path"], todo["line"]) == ("src/calc.py", 13)
    (syntax,) = by_kind(response, "syntax_error")
    assert (syntax["path"], syntax["line"], syntax["severity"]) == ("src/broken.py", 2, "error")
    assert [f["path"] for f in by_kind(response, "missing_test")] == ["src/calc.py"]
    # `__all__` lists only `exported`, so `compute` is not public and needs no docstring.
    assert by_kind(response, "missing_docstring") == []
    assert response.json_value["findings"][0]["severity"] == "error"


async def test_analyze_json_mode_returns_the_document_as_text() -> None:
    response = await analysis([{"path": "a.py", "content": SOURCE}])
    value = json.loads(response.text)
    assert value == response.json_value
    assert matches_schema(value, ANALYSIS_SCHEMA)
    assert value["source"] == "offline"
    assert value["report"].startswith(NOTICE + "\n")
    assert "`a.py:3` `os` is imported but never used" in value["report"]
    totals = value["metrics"]["totals"]
    assert (totals["files"], totals["python_files"], totals["functions"]) == (1, 1, 1)


async def test_analyze_without_schema_answers_markdown_with_json_value() -> None:
    messages = build_analyze_messages("Review", [{"path": "a.py", "content": SOURCE}])
    response = await ask(CompletionRequest(messages=messages))
    assert response.text.startswith(NOTICE)
    assert response.json_value["report"] == response.text


async def test_analyze_reports_failing_command_and_slice_line_numbers() -> None:
    response = await analysis(
        [
            {"path": "m.py", "content": "a\n# FIXME b", "start_line": 40, "end_line": 41},
            {"argv": ["pytest"], "exit_code": 1, "stdout": "FAILED t/test_x.py::test_y\n1 failed"},
        ],
        instruction="Fix the failures",
    )
    (todo,) = by_kind(response, "todo")
    assert todo["line"] == 41
    (failure,) = by_kind(response, "command_failed")
    assert "exited with 1: 1 failed" in failure["message"]
    assert by_kind(response, "test_failure")[0]["path"] == "t/test_x.py"
    assert "## Proposed edits (not applied)" in response.json_value["report"]


async def test_no_test_files_is_one_warning() -> None:
    response = await analysis([{"files": ["src/a.py", "src/b.py"]}])
    (finding,) = response.json_value["findings"]
    assert (finding["kind"], finding["severity"]) == ("no_tests", "warning")


async def test_summarize_is_extractive_and_says_it_is_offline() -> None:
    report = (await analysis([{"path": "a.py", "content": SOURCE}])).json_value["report"]
    prose = "Replay reproduced all steps. Nothing diverged in 12 runs. The weather was fine."
    messages = build_summarize_messages("Summarize", [report, prose])
    response = await ask(CompletionRequest(messages=messages))
    lines = response.text.split("\n")
    assert lines[0] == NOTICE
    assert "# Summary" in lines
    # The report read back: its overview sentence, then its suggestions (not its warnings again).
    done = lines[lines.index("## What the run did") + 2]
    assert done.startswith("- Analyzed 1 file")
    suggestions = lines[lines.index("## Top suggestions") + 2 : lines.index("## Key points") - 1]
    assert suggestions[0].startswith("1. `a.py:12` Split `compute` (58 lines) into helpers")
    assert any("Delete line 3 (`import os`)" in line for line in suggestions)
    assert all(line in report for line in (s.split(" ", 1)[1] for s in suggestions))
    assert "**warning**" not in response.text
    points = [line[2:] for line in lines[lines.index("## Key points") + 2 :] if line]
    # Other text is quoted by its key sentences, best first.
    assert points[0] == "Replay reproduced all steps."
    assert all(point in prose for point in points)
    assert response.json_value is None


async def test_request_without_marker_gets_a_deterministic_generic_answer() -> None:
    messages = [ChatMessage(role="user", content="What is 2 + 2? Answer briefly please.")]
    response = await ask(CompletionRequest(messages=messages))
    assert response.text.startswith(NOTICE)
    assert "What is 2 + 2?" in response.text
    assert response.raw["task"] == "generic"


async def test_any_json_schema_gets_a_matching_document() -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "confidence": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "mode": {"enum": ["fast", "slow"]},
        },
        "required": ["answer", "confidence", "tags", "mode"],
    }
    messages = [ChatMessage(role="user", content="Classify this sentence please.")]
    response = await ask(CompletionRequest(messages=messages, json_schema=schema))
    value = json.loads(response.text)
    assert value == response.json_value
    assert matches_schema(value, schema)
    assert value["answer"].startswith(NOTICE)
    assert value["mode"] == "fast"


async def test_any_model_name_is_accepted() -> None:
    messages = [ChatMessage(role="user", content="hello there")]
    response = await OfflineProvider().complete(CompletionRequest(messages=messages), "custom")
    assert response.model == "custom"
    assert response.raw["model"] == "custom"


@pytest.mark.parametrize(
    ("goal", "asks_for_edits"),
    [("Fix the parser", True), ("Refactoring ideas", True), ("Address the review", False)],
)
async def test_plan_notes_edit_requests_without_planning_edits(
    tmp_path: Path, goal: str, asks_for_edits: bool
) -> None:
    plan = await plan_for(goal, make_workspace(tmp_path))
    assert ("no edit_file step" in plan["rationale"]) is asks_for_edits
    assert "edit_file" not in [step["step_type"] for step in plan["steps"]]
