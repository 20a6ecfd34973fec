"""The offline analysis on a real fixture project: which modules have tests (by what the tests
import), which definitions need docstrings, and the order and grouping of what it reports."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.list_files import LIST_FILES
from agent_engine.executors.llm_steps import ANALYZE
from agent_engine.executors.read_file import READ_FILE
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
)
from agent_engine.llm.offline import OfflineProvider
from agent_engine.llm.offline_findings import KIND_RANK
from agent_engine.llm.prompts import ANALYSIS_SCHEMA, PLAN_SCHEMA, build_analyze_messages
from agent_engine.llm.prompts import build_plan_messages as plan_messages

PROJECT = Path(__file__).resolve().parents[2] / "fixtures" / "coverage_project"
STEP_TYPES = ["list_files", "read_file", "analyze", "summarize"]
CATALOG = [{"step_type": name, "input_schema": {"type": "object"}} for name in STEP_TYPES]


class OfflineClient(LLMClient):
    """The run's LLM client, answering every request with the offline model."""

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        return await OfflineProvider().complete(request, "offline-1")

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


def project_files() -> list[str]:
    return sorted(p.relative_to(PROJECT).as_posix() for p in PROJECT.rglob("*") if p.is_file())


def read_output(path: str, last_line: int | None = None) -> dict[str, Any]:
    """A read_file output for a fixture file (its first ``last_line`` lines when given)."""
    lines = (PROJECT / path).read_text().split("\n")
    end = len(lines) if last_line is None else min(last_line, len(lines))
    return {
        "path": path,
        "content": "\n".join(lines[:end]),
        "start_line": 1,
        "end_line": end,
        "line_count": len(lines),
    }


async def analyze(inputs: list[Any], instruction: str = "Review") -> dict[str, Any]:
    messages = build_analyze_messages(instruction, inputs)
    request = CompletionRequest(messages=messages, json_schema=ANALYSIS_SCHEMA)
    response = await OfflineProvider().complete(request, "offline-1")
    value: dict[str, Any] = response.json_value
    return value


def of_kind(analysis: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in analysis["findings"] if f["kind"] == kind]


def listing() -> dict[str, Any]:
    return {"files": [{"path": p, "size": (PROJECT / p).stat().st_size} for p in project_files()]}


async def test_only_the_module_no_test_imports_is_reported_untested() -> None:
    python = [p for p in project_files() if p.endswith(".py")]
    analysis = await analyze([listing(), *(read_output(p) for p in python)])
    (untested,) = of_kind(analysis, "missing_test")
    # Reached by `import pkg.alpha`, `from pkg import beta`, `from pkg.gamma import compute`,
    # "pkg.delta.clock", `pkg.epsilon.run()`, a re-export, relative imports, a test's name; the
    # private module, the constants module and the example are not asked to have tests.
    assert untested["path"] == "pkg/untested.py"
    assert untested["message"] == "no test module imports `untested` or is named after it"
    assert untested["suggestion"] == (
        "Add `tests/test_untested.py` with tests for `parse`, `render`, `count`."
    )


async def test_the_first_lines_of_unread_tests_are_enough_and_missing_ones_are_said() -> None:
    forms = (PROJECT / "tests/test_forms.py").read_text().split("\n")
    # Cut inside the file, right after a `def` line: what parses of the beginning still counts.
    cut = forms.index("def test_shout():") + 1
    heads = [
        read_output("tests/test_forms.py", last_line=cut),
        read_output("tests/test_theta.py"),
        read_output("pkg/tests/test_inner.py"),
    ]
    analysis = await analyze([listing(), read_output("pkg/__init__.py"), *heads])
    assert [f["path"] for f in of_kind(analysis, "missing_test")] == ["pkg/untested.py"]

    without_tests = await analyze([listing(), read_output("pkg/__init__.py")])
    hedged = {f["path"]: f["message"] for f in of_kind(without_tests, "missing_test")}
    assert "pkg/untested.py" in hedged
    assert "pkg/theta.py" not in hedged  # named by tests/test_theta.py
    assert hedged["pkg/untested.py"] == (
        "no test module is named after `untested` (the 3 test modules were not read, so what "
        "they import is not known)"
    )


async def test_overload_stubs_setters_magic_and_private_names_need_no_docstring() -> None:
    python = [p for p in project_files() if p.endswith(".py")]
    analysis = await analyze([read_output(p) for p in python])
    by_path = {f["path"]: f for f in of_kind(analysis, "missing_docstring")}
    # shapes.py overloads scale, grow, shrink and Square.fit through typing.overload,
    # typing_extensions.overload, `t.overload` and a bare `overload`; only Square.area is bare.
    shapes = by_path["pkg/shapes.py"]
    assert shapes["message"] == "public function `Square.area` has no docstring"
    assert shapes["count"] == 1
    assert (
        shapes["line"]
        == (PROJECT / "pkg/shapes.py").read_text().split("\n").index("    def area(self) -> float:")
        + 1
    )
    assert "pkg/_private.py" not in by_path  # a private module's functions are not public
    assert set(by_path) == {"pkg/shapes.py", "pkg/untested.py"}


async def test_a_module_with_many_missing_docstrings_is_one_finding_with_a_count() -> None:
    analysis = await analyze([read_output("pkg/untested.py")])
    (grouped,) = of_kind(analysis, "missing_docstring")
    assert grouped["count"] == 5
    assert grouped["line"] == 4
    assert grouped["message"] == (
        "5 public definitions (`parse`, `render`, `count`, `largest`, …) have no docstring"
    )
    assert grouped["suggestion"] == (
        "Add one-sentence docstrings to `parse`, `render`, `count`, `largest` and the 1 others."
    )
    assert analysis["metrics"]["occurrences_total"] == 5


LONG = (
    "def long_one(total):\n"
    + "".join(f"    total += {i}\n" for i in range(60))
    + "    return total\n"
)
RANKED_SOURCES = {
    "src/docs_only.py": '"""Module."""\n\n\ndef undocumented():\n    return 1\n',
    "src/markers.py": '"""Module."""\n# TODO: one\n# FIXME: two\n',
    "src/imports.py": '"""Module."""\nimport os\n',
    "src/long.py": '"""Module."""\n\n\n' + LONG,
    "src/bugs.py": (
        '"""Module."""\n\n\n'
        "def collect(item, into=[]):\n"
        '    """Collect."""\n'
        "    try:\n"
        "        into.append(item)\n"
        "    except:\n"
        "        pass\n"
        "    assert (into, 'never empty')\n"
        "    return into is 'x'\n"
    ),
    "src/broken.py": "def f(:\n    pass\n",
}


async def test_findings_come_ranked_by_what_matters_each_with_a_suggestion() -> None:
    files = [{"path": path, "content": content} for path, content in RANKED_SOURCES.items()]
    tests = {"files": [*RANKED_SOURCES, "tests/test_bugs.py", "tests/test_markers.py"]}
    analysis = await analyze([tests, *files])
    kinds = [f["kind"] for f in analysis["findings"]]
    assert kinds == [
        "syntax_error",
        "mutable_default",
        "bare_except",
        "literal_identity",
        "assert_tuple",
        "missing_test",
        "missing_test",
        "long_function",
        "unused_import",
        "todo",
        "missing_docstring",
        "missing_docstring",
    ]
    assert sorted(kinds, key=KIND_RANK.__getitem__) == kinds
    assert all(f["suggestion"] for f in analysis["findings"])
    # Untested modules with more code come first; markers of one file are one finding.
    assert [f["path"] for f in of_kind(analysis, "missing_test")] == [
        "src/long.py",
        "src/docs_only.py",
    ]
    (markers,) = of_kind(analysis, "todo")
    assert (markers["count"], markers["message"]) == (2, "2 TODO/FIXME/XXX markers (lines 2, 3)")
    report = analysis["report"]
    headings = [line for line in report.split("\n") if line.startswith("### ")]
    assert headings[:3] == [
        "### Syntax errors (1)",
        "### Mutable default arguments (1)",
        "### Bare except clauses (1)",
    ]
    assert headings[-1] == "### Missing docstrings (2)"
    suggestions = report.split("## Suggested improvements\n\n")[1].split("\n")
    assert suggestions[0] == (
        "1. `src/broken.py:1` Fix the syntax at line 1 first: nothing in this file can be imported."
    )
    assert suggestions[1].startswith("2. `src/bugs.py:4` Default `into` to None")


async def test_a_bare_except_that_re_raises_is_no_finding() -> None:
    source = (
        '"""M."""\n\n\ndef f():\n    """F."""\n'
        "    try:\n        return 1\n    except:\n        raise\n"
    )
    analysis = await analyze([{"path": "m.py", "content": source}])
    assert analysis["findings"] == []


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(PROJECT, target)
    return target.resolve()


async def test_an_offline_plan_reads_what_decides_which_modules_have_tests(
    workspace: Path,
) -> None:
    context = ExecutorContext(
        run_id="run-1",
        step_number=1,
        workspace_root=workspace,
        llm=OfflineClient(),
        logger=logging.getLogger("test_offline_findings"),
    )
    listed = (await LIST_FILES.execute(LIST_FILES.validate_input({}), context)).model_dump()
    goal = "Analyze the codebase and suggest improvements"
    request = CompletionRequest(
        messages=plan_messages(goal, listed["files"], CATALOG), json_schema=PLAN_SCHEMA
    )
    plan = (await OfflineProvider().complete(request, "offline-1")).json_value
    reads = [s["input_data"] for s in plan["steps"] if s["step_type"] == "read_file"]
    assert {"path": "pkg/__init__.py"} in reads
    assert {"path": "tests/test_theta.py", "end_line": 40} in reads
    assert {"path": "pkg/tests/test_inner.py", "end_line": 40} in reads
    assert "their imports show which modules have tests" in plan["rationale"]

    outputs: list[Any] = [listed]
    for data in reads:
        read = await READ_FILE.execute(READ_FILE.validate_input(data), context)
        outputs.append(read.model_dump())
    (analyze_step,) = [s for s in plan["steps"] if s["step_type"] == "analyze"]
    assert len(analyze_step["input_data"]["inputs"]) == len(outputs)
    instruction = analyze_step["input_data"]["instruction"]
    analysis = await ANALYZE.execute(
        ANALYZE.validate_input({"instruction": instruction, "inputs": outputs}), context
    )
    untested = [f["path"] for f in analysis.structured["findings"] if f["kind"] == "missing_test"]
    assert untested == ["pkg/untested.py"]
