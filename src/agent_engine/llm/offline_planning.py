"""The offline model's planner: a rule-based plan from the goal and the workspace listing.

List the workspace, read the files that matter (chosen deterministically, at most
:data:`MAX_READS`), read the imports at the top of the test modules and the top packages'
``__init__`` (what the tests cover is decided by what they import), analyze them against the goal,
run the tests when the goal asks about tests, and summarize. Edits are proposed in the analysis,
never planned: the offline model cannot write a change worth putting in front of an approver.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from agent_engine.llm.change_intent import asks_for_changes
from agent_engine.llm.offline_analysis import is_test_module, is_test_path
from agent_engine.llm.offline_revision import adaptive_first_plan
from agent_engine.llm.prompts import FileEntry, PlanPrompt

MAX_READS = 6
# Test modules whose first lines (where imports are) are read beyond MAX_READS, and how many lines.
MAX_TEST_HEADS = 24
TEST_HEAD_LINES = 40
# Package __init__ files read for the names they re-export; larger ones are left out.
MAX_PACKAGE_INITS = 2
MAX_PACKAGE_INIT_BYTES = 32_768
# The read_file default cap; a larger file would fail the step, so it is never planned.
MAX_READ_BYTES = 1_048_576
BUILTIN_STEP_TYPES = ("list_files", "read_file", "analyze", "run_command", "summarize")
TEST_COMMAND = ["python", "-m", "pytest", "-q"]

_SKIPPED_DIRS = {
    ".git", ".hg", ".svn", ".venv", "venv", "env", "node_modules", "__pycache__", "build",
    "dist", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "site-packages",
    ".idea", ".vscode", ".eggs",
}  # fmt: skip
_READABLE_SUFFIXES = {".py", ".md", ".rst", ".txt", ".toml", ".cfg", ".ini", ".yaml", ".yml"}
_CONFIG_NAMES = ("pyproject.toml", "setup.py", "setup.cfg")
_ENTRY_NAMES = {"__main__.py", "main.py", "cli.py", "app.py", "manage.py"}
# Directories of examples and documentation: not the project's own code.
_SIDE_DIRS = {"examples", "example", "samples", "docs", "doc", "scripts", "benchmarks", "bench"}
_TEST_INTENT_RE = re.compile(r"\b(tests?|testing|pytest|test suite)\b", re.IGNORECASE)
_PATH_TOKEN_RE = re.compile(r"[\w./-]*[\w-]\.[A-Za-z]\w*|[\w.-]+/[\w./-]+")


class _PlanSteps:
    """The steps planned so far; a step type the catalog does not offer is left out."""

    def __init__(self, available: set[str]) -> None:
        self.available = available
        self.steps: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def add(
        self,
        step_type: str,
        input_data: dict[str, Any],
        after: list[int],
        *,
        optional: bool = False,
    ) -> int | None:
        """Append a step depending on ``after``; its number, or None when not available."""
        if step_type not in self.available:
            return None
        step: dict[str, Any] = {"step_type": step_type, "input_data": input_data}
        step["depends_on"] = sorted(set(after))
        if optional:
            step["optional"] = True
        self.steps.append(step)
        return len(self.steps)


def plan_from_prompt(prompt: PlanPrompt) -> dict[str, Any]:
    """The plan answer ``{"steps", "rationale", "source"}`` for the parsed planning prompt."""
    adaptive = adaptive_first_plan(prompt)
    if adaptive is not None:
        return adaptive
    plan = _PlanSteps(set(prompt.step_types) or set(BUILTIN_STEP_TYPES))
    if prompt.files is None:
        plan.notes.append("The run has no workspace, so the goal itself is analyzed.")
        analyzed = plan.add("analyze", {"instruction": prompt.goal, "inputs": []}, [])
        inputs: list[Any] = [_ref(analyzed)] if analyzed else [prompt.goal]
        summary = {
            "instruction": _summary_instruction(prompt.goal),
            "inputs": inputs,
            "goal": prompt.goal,
        }
        plan.add("summarize", summary, [analyzed] if analyzed else [])
    else:
        _plan_workspace(plan, prompt.goal, prompt.files)
    if not plan.steps:
        # None of the known step types is offered: use the first one rather than plan nothing.
        first = sorted(plan.available)[0]
        plan.steps.append({"step_type": first, "input_data": {}})
        plan.notes.append(f"No known step type is available; planned a single {first} step.")
    return {"rationale": " ".join(plan.notes), "source": "offline", "steps": plan.steps}


def choose_reads(files: list[FileEntry], goal: str) -> list[tuple[str, str]]:
    """The files worth reading for ``goal`` as ``(path, reason)``, most important first."""
    candidates = [entry for entry in files if _readable(entry)]
    by_depth = sorted(candidates, key=lambda e: (len(PurePosixPath(e.path).parts), e.path))
    mentioned = _mentioned(candidates, goal)
    names = {entry.path: PurePosixPath(entry.path).name for entry in by_depth}
    readme = [e for e in by_depth if names[e.path].lower().startswith("readme")][:1]
    config = [e for name in _CONFIG_NAMES for e in by_depth if names[e.path] == name][:1]
    entry_points = [
        e
        for e in by_depth
        if names[e.path] in _ENTRY_NAMES and not is_test_path(e.path) and not _aside(e.path)
    ][:1]
    python = sorted(
        (e for e in candidates if e.path.endswith(".py") and not _aside(e.path)),
        key=lambda e: (-(e.size or 0), len(PurePosixPath(e.path).parts), e.path),
    )
    sources = [e for e in python if not is_test_path(e.path) and names[e.path] != "__init__.py"]
    tests = [e for e in python if is_test_path(e.path) and names[e.path] != "conftest.py"]
    ordered = [
        *((e, "named in the goal") for e in mentioned),
        *((e, "project overview") for e in readme),
        *((e, "packaging and tool configuration") for e in config),
        *((e, "entry point") for e in entry_points),
        *((e, "one of the largest sources") for e in sources[:2]),
        *((e, "the largest test module") for e in tests[:1]),
        *((e, "one of the largest sources") for e in sources[2:]),
    ]
    chosen: dict[str, str] = {}
    for entry, reason in ordered:
        chosen.setdefault(entry.path, reason)
        if len(chosen) == MAX_READS:
            break
    return list(chosen.items())


def choose_context_reads(files: list[FileEntry], read: set[str]) -> list[tuple[str, int | None]]:
    """Files read for what the tests cover, as ``(path, last line or None)``, beyond ``read``.

    The first lines of test modules (their imports) and the ``__init__`` of top-level packages
    (the names they re-export), so that the analysis can tell which modules the tests import.
    """
    candidates = [
        e for e in files if _readable(e) and e.path.endswith(".py") and e.path not in read
    ]
    paths = {e.path for e in files}
    inits = [
        e
        for e in sorted(candidates, key=lambda e: (len(PurePosixPath(e.path).parts), e.path))
        if PurePosixPath(e.path).name == "__init__.py"
        and not is_test_path(e.path)
        and not _aside(e.path)
        and str(PurePosixPath(e.path).parent.parent / "__init__.py") not in paths
        and 0 < (e.size if e.size is not None else 1) <= MAX_PACKAGE_INIT_BYTES
    ][:MAX_PACKAGE_INITS]
    tests = sorted((e for e in candidates if is_test_module(e.path)), key=lambda e: e.path)
    tests = tests[:MAX_TEST_HEADS]
    return [(e.path, None) for e in inits] + [(e.path, TEST_HEAD_LINES) for e in tests]


def _plan_workspace(plan: _PlanSteps, goal: str, files: list[FileEntry]) -> None:
    listed = plan.add("list_files", {}, [])
    if listed:
        plan.notes.append(f"List the workspace ({len(files)} files).")
    first = [listed] if listed else []
    reads: list[int] = []
    chosen = choose_reads(files, goal)
    for path, reason in chosen:
        number = plan.add("read_file", {"path": path}, first)
        if number is None:
            break
        reads.append(number)
        plan.notes.append(f"Read {path} ({reason}).")
    context_reads = choose_context_reads(files, {path for path, _ in chosen}) if reads else []
    for path, last_line in context_reads:
        read_input: dict[str, Any] = {"path": path}
        if last_line is not None:
            read_input["end_line"] = last_line
        number = plan.add("read_file", read_input, first)
        if number is None:
            break
        reads.append(number)
    _note_context_reads(plan, context_reads)
    analysis = {
        "instruction": _analysis_instruction(goal),
        "inputs": [_ref(n) for n in first + reads],
    }
    analyzed = plan.add("analyze", analysis, first + reads)
    if analyzed:
        plan.notes.append("Analyze them against the goal.")
    if asks_for_changes(goal):
        plan.notes.append(
            "The goal asks for changes: the analysis proposes concrete edits, but no edit_file "
            "step is planned because the offline model cannot write a change worth approving."
        )
    previous = [analyzed] if analyzed else (first + reads)[-1:]
    tested = None
    has_tests = any(e.path.endswith(".py") and is_test_path(e.path) for e in files)
    if _TEST_INTENT_RE.search(goal) and has_tests:
        tested = plan.add("run_command", {"argv": list(TEST_COMMAND)}, previous, optional=True)
        if tested:
            plan.notes.append("Run the tests (the goal mentions tests; optional, needs approval).")
    # Without the optional test step the summary quotes the analysis; with it, every earlier
    # output (an empty inputs list), so a skipped test run leaves no dangling reference.
    inputs = [] if tested or not analyzed else [_ref(analyzed)]
    summary = {"instruction": _summary_instruction(goal), "inputs": inputs, "goal": goal}
    if plan.add("summarize", summary, previous + ([tested] if tested else [])):
        plan.notes.append("Summarize the results.")


def _readable(entry: FileEntry) -> bool:
    pure = PurePosixPath(entry.path)
    return (
        (pure.suffix in _READABLE_SUFFIXES or pure.name.lower().startswith("readme"))
        and (entry.size is None or entry.size <= MAX_READ_BYTES)
        and not any(part in _SKIPPED_DIRS or part.endswith(".egg-info") for part in pure.parts)
    )


def _aside(path: str) -> bool:
    return any(part in _SIDE_DIRS for part in PurePosixPath(path).parts[:-1])


def _note_context_reads(plan: _PlanSteps, reads: list[tuple[str, int | None]]) -> None:
    inits = [path for path, last in reads if last is None]
    heads = len(reads) - len(inits)
    if inits:
        plan.notes.append(f"Read {', '.join(inits)} (the names the package re-exports).")
    if heads:
        plan.notes.append(
            f"Read the first {TEST_HEAD_LINES} lines of {heads} more test module(s) "
            "(their imports show which modules have tests)."
        )


def _mentioned(candidates: list[FileEntry], goal: str) -> list[FileEntry]:
    tokens = [token.strip("./") for token in _PATH_TOKEN_RE.findall(goal)]
    found: list[FileEntry] = []
    for token in dict.fromkeys(token for token in tokens if token):
        for entry in candidates:
            if entry.path == token or entry.path.endswith("/" + token):
                found.append(entry)
                break
    return found


def _ref(step_number: int | None) -> dict[str, str]:
    return {"$ref": f"steps.{step_number}.output"}


def _analysis_instruction(goal: str) -> str:
    text = f"{goal.strip()}\n\nReport concrete findings with file, line and severity, and suggest "
    text += "improvements."
    if asks_for_changes(goal):
        text += " Propose the exact edits (file, line, change) without applying them."
    return text


def _summary_instruction(goal: str) -> str:
    first_line = goal.strip().split("\n")[0][:200]
    return f"Summarize the results for the goal: {first_line}"
