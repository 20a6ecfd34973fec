"""The offline model's summarize and generic answers: deterministic, from the inputs alone.

A summary says what the run did (files read, analyses, edits applied with the lines they changed,
commands and their test counts), which findings the run's own edits resolved, the top suggestions
still open, and the key sentences of any other text. When the goal asked for changes that the run
did not make, that comes first. Text is scored (position, numbers, severity) and the best
sentences are quoted verbatim; ties keep input order, so the same inputs give the same summary.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import NamedTuple

from agent_engine.llm.base import ChatMessage
from agent_engine.llm.offline_findings import Finding, location
from agent_engine.llm.offline_report import OFFLINE_NOTICE, suggestion_line, top_suggestions
from agent_engine.llm.offline_run_record import (
    Analysis,
    CommandRun,
    Edit,
    FileRead,
    Resolution,
    RunRecord,
    read_run,
    resolve,
)
from agent_engine.llm.prompts import TaskPrompt

MAX_POINTS = 8
MAX_SUGGESTIONS = 5
MAX_FILES_LISTED = 6
_MAX_POINT_CHARS = 300
_MAX_QUOTED_LINE = 80
_SEVERITY_BULLET_RE = re.compile(r"^[-*] \*\*(error|warning|info)\*\* ")
_LIST_ITEM_RE = re.compile(r"^(?:[-*+]|\d+\.) ")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[])")
_SEVERITY_SCORE = {"error": 6.0, "warning": 4.0, "info": 2.0}
_SKIPPED_PREFIXES = ("#", "|", "```", ">", "- …", "_Produced by the offline model")


class Candidate(NamedTuple):
    """A sentence or line that may be quoted; higher scores first, then input order."""

    score: float
    section: int
    order: int
    text: str


def summarize_prompt(prompt: TaskPrompt) -> str:
    """The Markdown summary: what the run did, what it resolved, what to do next, other points."""
    record = read_run(prompt)
    resolution = resolve(record)
    instruction = prompt.instruction.strip().split("\n")[0][:200] or "Summarize the inputs"
    out = [OFFLINE_NOTICE, "", "# Summary", "", f"> {instruction}", ""]
    if prompt.unmet_goal:
        out += [f"**{prompt.unmet_goal.strip()}**", ""]
    done = _what_the_run_did(record, resolution)
    out += ["## What the run did", ""]
    out += done or ["- Nothing to report: the inputs hold no files, analyses, edits or commands."]
    if resolution.resolved:
        out += ["", "## Resolved by this run", ""]
        out += [
            f"- {location(finding)}{finding.message} (resolved by the edit of `{path}`)"
            for finding, path in resolution.resolved
        ]
    focus = f"{prompt.goal or ''}\n{prompt.instruction}"
    suggestions = top_suggestions(_named_first(resolution.open, focus), MAX_SUGGESTIONS, per_kind=2)
    if suggestions:
        heading = "## Top suggestions (not applied)" if prompt.unmet_goal else "## Top suggestions"
        out += ["", heading, ""]
        out += [suggestion_line(n, f) for n, f in enumerate(suggestions, start=1)]
    candidates = [c for index, text in record.texts for c in text_candidates(index, text)]
    points = pick(candidates, MAX_POINTS)
    if points:
        out += ["", "## Key points", ""]
        out += [f"- {point}" for point in points]
    return "\n".join(out) + "\n"


def _named_first(findings: list[Finding], text: str) -> list[Finding]:
    """The findings on files the goal or instruction names first, each group in its order."""
    words = {word.strip(".") for word in re.findall(r"[\w./-]+", text)}

    def named(finding: Finding) -> bool:
        path = PurePosixPath(finding.path or "")
        return bool(finding.path) and (path.name in words or finding.path in words)

    return [f for f in findings if named(f)] + [f for f in findings if not named(f)]


def _what_the_run_did(record: RunRecord, resolution: Resolution) -> list[str]:
    lines = [f"- Listed {listing}." for listing in record.listings]
    lines += _files_read(record.files)
    lines += [_describe_analysis(a, resolution) for a in record.analyses]
    lines += [_describe_edit(edit) for edit in record.edits]
    lines += [_describe_command(command) for command in record.commands]
    lines += [f"- Test output given as text: {tests}." for tests in record.test_outputs]
    return lines


def _files_read(files: list[FileRead]) -> list[str]:
    whole = [f for f in files if f.complete and f.content is not None]
    parts = [f for f in files if f not in whole]
    lines = [f"- Read {_describe_file(f)}" for f in whole[:MAX_FILES_LISTED]]
    if len(whole) > MAX_FILES_LISTED:
        lines.append(f"- Read {len(whole) - MAX_FILES_LISTED} more whole files.")
    if parts:
        noun = "file" if len(parts) == 1 else "files"
        lines.append(f"- Read part of {len(parts)} more {noun} (e.g. `{parts[0].path}`).")
    return lines


def _describe_analysis(analysis: Analysis, resolution: Resolution) -> str:
    resolved = sum(1 for finding, _ in resolution.resolved if finding in analysis.findings)
    overview = analysis.overview or f"An analysis reported {len(analysis.findings)} finding(s)."
    if resolved:
        overview += f" This run's edits resolved {resolved} of them."
    return f"- {overview}"


def _describe_edit(edit: Edit) -> str:
    record = edit.record
    removed, added = record.removed, record.added
    if record.created:
        return f"- Created `{record.path}` ({_lines(len(added))})."
    changes = (
        [f"removed {_lines(len(removed))}{_quoted([t for _, t in removed])}"] if removed else []
    )
    if added:
        changes.append(f"added {_lines(len(added))}{_quoted(added)}")
    return f"- Edited `{record.path}`: {' and '.join(changes) or 'no line changed'}."


def _describe_command(command: CommandRun) -> str:
    result = "timed out" if command.timed_out else f"exit code {command.exit_code}"
    if command.tests:
        result += f", {command.tests}"
    return f"- Ran `{command.command}`: {result}."


def _lines(count: int) -> str:
    return "1 line" if count == 1 else f"{count} lines"


def _quoted(lines: list[str]) -> str:
    """The changed lines in code spans when they are few and short enough to read inline."""
    shown = [line.strip() for line in lines if line.strip()]
    if not shown or len(shown) > 2 or any(len(t) > _MAX_QUOTED_LINE or "`" in t for t in shown):
        return ""
    return " (" + ", ".join(f"`{text}`" for text in shown) + ")"


def answer_generic(messages: Sequence[ChatMessage]) -> str:
    """The answer to a request without a task marker: the key sentences of the last user message."""
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    points = pick(text_candidates(0, last), 5)
    out = [
        OFFLINE_NOTICE,
        "",
        "The offline model has no general knowledge: it plans, analyzes and summarizes requests "
        "built by the engine's prompt builders. The key sentences of this request:",
        "",
    ]
    out += [f"- {point}" for point in points] or ["- (The request has no text.)"]
    return "\n".join(out) + "\n"


def pick(candidates: list[Candidate], limit: int) -> list[str]:
    """The ``limit`` best distinct candidate texts, best first, ties in input order."""
    chosen: list[str] = []
    for candidate in sorted(candidates, key=lambda c: (-c.score, c.section, c.order)):
        if candidate.text not in chosen:
            chosen.append(candidate.text)
        if len(chosen) == limit:
            break
    return chosen


def text_candidates(section: int, text: str) -> list[Candidate]:
    """Lines of Markdown and sentences of prose, scored; headings, tables and code are skipped."""
    candidates: list[Candidate] = []
    prose_position = 0
    in_code = False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code = not in_code
        if in_code or not stripped or stripped.startswith(_SKIPPED_PREFIXES):
            continue
        if severity := _SEVERITY_BULLET_RE.match(stripped):
            candidates.append(_candidate(_SEVERITY_SCORE[severity.group(1)], section, stripped[2:]))
        elif _LIST_ITEM_RE.match(stripped):
            item = _LIST_ITEM_RE.sub("", stripped, count=1)
            candidates.append(_candidate(2.5, section, item))
        else:
            for sentence in _SENTENCE_END_RE.split(stripped):
                bonus = 2.0 if prose_position == 0 else 1.0 if prose_position == 1 else 0.0
                digits = 0.5 if any(char.isdigit() for char in sentence) else 0.0
                candidates.append(_candidate(2.0 + bonus + digits, section, sentence))
                prose_position += 1
    return [
        candidate._replace(order=order)
        for order, candidate in enumerate(candidates)
        if len(candidate.text) >= 8
    ]


def _candidate(score: float, section: int, text: str) -> Candidate:
    if len(text) > _MAX_POINT_CHARS:
        text = text[: _MAX_POINT_CHARS - 1] + "…"
    return Candidate(score, section, 0, text)


def _describe_file(read: FileRead) -> str:
    lines = read.content.count("\n") + 1 if read.content else 0
    python = read.path.endswith((".py", ".pyi"))
    # Code is no sentence: a Python file is described by its docstring or not at all.
    sentence = _python_docstring(read.content) if python else _first_sentence(read.content)
    head = f"`{read.path}` ({lines} lines)"
    return f"{head}: {sentence}" if sentence else f"{head}."


def _python_docstring(source: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            docstring = ast.get_docstring(ast.parse(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    return _first_sentence(docstring or "")


def _first_sentence(text: str) -> str:
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        if flat and not flat.startswith(("#", "!", "[", "<", "`", "|", "-", "=", '"""', "import")):
            return _SENTENCE_END_RE.split(flat)[0][:_MAX_POINT_CHARS]
    return ""
