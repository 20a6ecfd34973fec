"""The offline model's summarize and generic answers: extractive and deterministic.

Candidate sentences and lines are scored (severity of a finding, position in its input, numbers)
and the best are quoted verbatim; ties keep input order, so the same inputs give the same summary.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from agent_engine.llm.base import ChatMessage
from agent_engine.llm.offline_analysis import is_python_path, is_test_path
from agent_engine.llm.offline_report import OFFLINE_NOTICE, command_outcome
from agent_engine.llm.prompts import Section, TaskPrompt, parse_listing

MAX_POINTS = 8
_MAX_POINT_CHARS = 300
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
    """The Markdown summary: notice, heading, what was read, then the key points, best first."""
    candidates: list[Candidate] = []
    kinds: list[str] = []
    for index, section in enumerate(prompt.sections):
        candidates += _section_candidates(index, section)
        kinds.append(section.kind)
    instruction = prompt.instruction.strip().split("\n")[0][:200] or "Summarize the inputs"
    out = [OFFLINE_NOTICE, "", "# Summary", "", f"> {instruction}", "", _overview(kinds), ""]
    points = pick(candidates, MAX_POINTS)
    out += ["## Key points", ""]
    out += [f"- {point}" for point in points] or ["- The inputs hold no text to summarize."]
    return "\n".join(out) + "\n"


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


def _section_candidates(index: int, section: Section) -> list[Candidate]:
    if section.kind == "file":
        text, described = _describe_file(section)
        return [_candidate(3.0 if described else 1.0, index, text)]
    if section.kind == "listing":
        paths = [entry.path for entry in parse_listing(section.content)]
        python = sum(1 for path in paths if is_python_path(path))
        tests = sum(1 for path in paths if is_python_path(path) and is_test_path(path))
        text = f"The listing has {len(paths)} files ({python} Python, {tests} test modules)."
        return [_candidate(3.0, index, text)]
    if section.kind == "command":
        return [_describe_command(index, section)]
    return text_candidates(index, section.content)


def _describe_file(section: Section) -> tuple[str, bool]:
    lines = section.content.count("\n") + 1 if section.content else 0
    sentence = _python_docstring(section) if is_python_path(section.title) else ""
    sentence = sentence or _first_sentence(section.content)
    head = f"`{section.title}` ({lines} lines)"
    return (f"{head}: {sentence}", True) if sentence else (f"{head}.", False)


def _python_docstring(section: Section) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            docstring = ast.get_docstring(ast.parse(section.content))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    return _first_sentence(docstring or "")


def _first_sentence(text: str) -> str:
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        if flat and not flat.startswith(("#", "!", "[", "<", "`", "|", "-", "=", '"""', "import")):
            return _SENTENCE_END_RE.split(flat)[0][:_MAX_POINT_CHARS]
    return ""


def _describe_command(index: int, section: Section) -> Candidate:
    code, summary = command_outcome(section)
    detail = f" ({summary})" if summary else ""
    return _candidate(
        7.0 if code != "0" else 3.0, index, f"`{section.title}` exited with {code}{detail}."
    )


def _overview(kinds: list[str]) -> str:
    if not kinds:
        return "No inputs were given."
    names = {"file": "file", "listing": "listing", "command": "command result"}
    counts = Counter(names.get(kind, "text") for kind in kinds)
    parts = [f"{count} {name}{'' if count == 1 else 's'}" for name, count in sorted(counts.items())]
    return f"Summarized {len(kinds)} input(s): {', '.join(parts)}."
