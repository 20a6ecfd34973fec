"""Findings of the offline analysis: what one says, and the order and grouping they are reported in.

The order is what matters first: code that cannot run or fails, likely bugs, modules with logic
and no tests, long functions, unused imports, markers, and missing docstrings last. Markers and
missing docstrings are grouped per file, so a module with 40 undocumented functions is one finding
with a count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

# Every kind the offline analysis reports, most important first, with its report heading.
KIND_TITLES = {
    "syntax_error": "Syntax errors",
    "command_failed": "Failed commands",
    "test_failure": "Failing tests",
    "mutable_default": "Mutable default arguments",
    "bare_except": "Bare except clauses",
    "literal_identity": "Identity comparisons with literals",
    "assert_tuple": "Asserts that always pass",
    "no_tests": "No test suite",
    "missing_test": "Modules without tests",
    "long_function": "Long functions",
    "unused_import": "Unused imports",
    "todo": "TODO markers",
    "missing_docstring": "Missing docstrings",
    "command_succeeded": "Commands that succeeded",
}
KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_TITLES)}
GROUPED_KINDS = ("todo", "missing_docstring")
# Kinds that are facts about the run rather than something to improve.
NOT_SUGGESTIONS = {"command_succeeded"}

_SUBJECT_RE = re.compile(r"`([^`]+)`")
_MARKER_RE = re.compile(r"\b(TODO|FIXME|XXX)\b[:\s]*(.*)$")
_MAX_NAMED = 4


@dataclass(frozen=True)
class Finding:
    """One reported problem; ``line`` is 1-based in the file, None when it concerns a whole file.

    ``count`` is how many occurrences a grouped finding stands for; ``weight`` orders findings of
    one kind (a longer function, a bigger untested module first) and is not reported.
    """

    kind: str
    path: str | None
    line: int | None
    message: str
    severity: str
    suggestion: str = ""
    count: int = 1
    weight: int = 0

    def as_json(self) -> dict[str, Any]:
        """The finding as the analysis JSON carries it."""
        return {
            "kind": self.kind,
            "path": self.path,
            "line": self.line,
            "message": self.message,
            "severity": self.severity,
            "suggestion": self.suggestion,
            "count": self.count,
        }

    @property
    def subject(self) -> str:
        """What the finding is about (the first name in backticks), to recognise it again."""
        match = _SUBJECT_RE.search(self.message)
        return match.group(1) if match else ""

    def sort_key(self) -> tuple[int, int, str, int, str]:
        """Most important kind first, then the heaviest, then by place: one order for every list."""
        rank = KIND_RANK.get(self.kind, len(KIND_RANK))
        return (rank, -self.weight, self.path or "", self.line or 0, self.message)


def finding_from_json(value: Any) -> Finding | None:
    """A finding from the analysis JSON (ours or another model's); None when it is not one."""
    if not isinstance(value, dict) or not isinstance(value.get("message"), str):
        return None
    path, line, count = value.get("path"), value.get("line"), value.get("count")
    return Finding(
        kind=str(value.get("kind") or "finding"),
        path=path if isinstance(path, str) else None,
        line=line if isinstance(line, int) and not isinstance(line, bool) else None,
        message=value["message"],
        severity=str(value.get("severity") or "info"),
        suggestion=value["suggestion"] if isinstance(value.get("suggestion"), str) else "",
        count=count if isinstance(count, int) and count > 0 else 1,
    )


def location(finding: Finding) -> str:
    """``path:line`` (or just the path) in a code span and a space; empty without a place."""
    if finding.path is None:
        return ""
    place = f"{finding.path}:{finding.line}" if finding.line is not None else finding.path
    return f"`{place}` "


def rank_findings(findings: list[Finding]) -> list[Finding]:
    """Group markers and missing docstrings per file, then order everything by importance."""
    grouped: dict[tuple[str, str | None], list[Finding]] = {}
    single: list[Finding] = []
    for finding in findings:
        if finding.kind in GROUPED_KINDS:
            grouped.setdefault((finding.kind, finding.path), []).append(finding)
        else:
            single.append(finding)
    for (kind, _), members in grouped.items():
        members.sort(key=lambda f: f.line or 0)
        single.append(_group_markers(members) if kind == "todo" else _group_docstrings(members))
    return sorted(single, key=Finding.sort_key)


def _group_markers(members: list[Finding]) -> Finding:
    first = members[0]
    lines = [f.line for f in members if f.line is not None]
    if len(members) == 1:
        marker = _MARKER_RE.search(first.message)
        word, text = (marker.group(1), marker.group(2)) if marker else ("marker", "")
        detail = f" ({text.rstrip('.')[:120]})" if text else ""
        suggestion = (
            f"Resolve the {word} on line {first.line}{detail} or move it to the issue tracker."
        )
        return replace(first, suggestion=suggestion, weight=1)
    numbers = ", ".join(str(n) for n in lines[:8]) + (", …" if len(lines) > 8 else "")
    return replace(
        first,
        message=f"{len(members)} TODO/FIXME/XXX markers (lines {numbers})",
        suggestion=f"Resolve the markers on lines {numbers}, or move them to the issue tracker.",
        count=len(members),
        weight=len(members),
    )


def _group_docstrings(members: list[Finding]) -> Finding:
    first = members[0]
    names = [f.subject for f in members if f.subject]
    module = any(not f.subject for f in members)
    named = ", ".join(f"`{name}`" for name in names[:_MAX_NAMED])
    rest = len(names) - _MAX_NAMED
    if len(members) == 1:
        what = f"`{names[0]}`" if names else "the module"
        suggestion = f"Add a one-sentence docstring to {what} saying what it does."
        return replace(first, suggestion=suggestion, weight=1)
    parts = ["the module"] if module else []
    if names:
        definitions = "definition" if len(names) == 1 else "definitions"
        parts.append(f"{len(names)} public {definitions} ({named}{', …' if rest > 0 else ''})")
    targets = named + (f" and the {rest} others" if rest > 0 else "")
    if module:
        targets = f"the module, {targets}" if targets else "the module"
    return replace(
        first,
        message=f"{' and '.join(parts)} have no docstring",
        suggestion=f"Add one-sentence docstrings to {targets}.",
        count=len(members),
        weight=len(members),
    )
