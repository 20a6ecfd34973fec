"""The offline model's analyze task: measure every input section and write the Markdown report and
the structured findings (``findings``, ``metrics``) that the analysis JSON schema describes.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from agent_engine.llm.offline_analysis import (
    FileMetrics,
    Finding,
    find_untested_modules,
    measure_file,
)
from agent_engine.llm.prompts import Section, TaskPrompt, parse_listing

OFFLINE_NOTICE = "_Produced by the offline model (deterministic, no LLM)._"
# Wording that asks for changes; then the report adds concrete (unapplied) edits.
EDIT_INTENT_RE = re.compile(
    r"\b(?:fix|chang|edit|modif|refactor|renam|updat|remov|delet|add|implement|patch|rewrit)"
    r"(?:e|es|ed|ing|s|y|ies|ied|ying)?\b",
    re.IGNORECASE,
)
MAX_FINDINGS = 200
_MAX_LISTED = 15
_EXIT_RE = re.compile(r"^exit code: (\S+)$", re.MULTILINE)
_TEST_SUMMARY_RE = re.compile(r"\b\d+ (passed|failed|errors?)\b")
_FAILED_RE = re.compile(r"^(?:FAILED|ERROR) ([^\s:]+)")
_SUGGESTIONS = {
    "syntax_error": "Fix the syntax errors first ({where}): nothing else in those files can run.",
    "command_failed": "Make the failing command pass ({where}).",
    "test_failure": "Make the failing tests pass ({where}).",
    "long_function": "Split the {n} long function(s) into smaller, separately tested parts "
    "({where}).",
    "unused_import": "Remove the {n} unused import(s) ({where}).",
    "no_tests": "Add a test suite: the listing has no test files.",
    "missing_test": "Add tests for the {n} module(s) that no test module names ({where}).",
    "todo": "Resolve the {n} TODO/FIXME/XXX marker(s) or turn them into tracked issues ({where}).",
    "missing_docstring": "Add docstrings to the {n} public module(s), class(es) and function(s) "
    "without one ({where}).",
}


def analyze_prompt(prompt: TaskPrompt) -> dict[str, Any]:
    """The analysis answer: ``report`` (Markdown), ``summary``, ``findings``, ``metrics``."""
    files: list[FileMetrics] = []
    findings: list[Finding] = []
    listing: list[str] = []
    commands = texts = 0
    for section in prompt.sections:
        if section.kind == "file":
            complete = not (section.partial or section.truncated)
            metrics, found = measure_file(
                section.title, section.content, section.start_line, complete
            )
            files.append(metrics)
            findings += found
        elif section.kind == "listing":
            listing += [entry.path for entry in parse_listing(section.content)]
        elif section.kind == "command":
            commands += 1
            findings += _command_findings(section)
        else:
            texts += 1
    if listing:
        findings += find_untested_modules(listing)
    findings.sort(key=Finding.sort_key)
    summary = _summary(files, findings, len(listing), commands, texts)
    metrics_json = _metrics(files, findings, len(listing), commands, texts)
    report = _report(prompt.instruction, summary, files, findings)
    return {
        "source": "offline",
        "summary": summary,
        "report": report,
        "findings": [finding.as_json() for finding in findings[:MAX_FINDINGS]],
        "metrics": metrics_json,
    }


def command_outcome(section: Section) -> tuple[str, str]:
    """A command section's exit code (``unknown`` if absent) and its last test-summary line."""
    exit_match = _EXIT_RE.search(section.content)
    code = exit_match.group(1) if exit_match else "unknown"
    lines = section.content.split("\n")
    summary = next((ln.strip("= ") for ln in reversed(lines) if _TEST_SUMMARY_RE.search(ln)), "")
    return code, summary


def _command_findings(section: Section) -> list[Finding]:
    code, summary = command_outcome(section)
    lines = section.content.split("\n")
    findings = [
        Finding("test_failure", match.group(1), None, line.strip()[:200], "error")
        for line in lines
        if (match := _FAILED_RE.match(line))
    ]
    detail = f": {summary}" if summary else ""
    if code == "0":
        message = f"`{section.title}` succeeded{detail}"
        findings.append(Finding("command_succeeded", None, None, message, "info"))
    else:
        message = f"`{section.title}` exited with {code}{detail}"
        findings.append(Finding("command_failed", None, None, message, "error"))
    return findings


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _summary(
    files: list[FileMetrics], findings: list[Finding], listed: int, commands: int, texts: int
) -> str:
    if not (files or listed or commands):
        return "No files, listings or command results were given, so there was nothing to measure."
    python = sum(1 for metrics in files if metrics.python)
    lines = sum(metrics.lines for metrics in files)
    parts = [f"Analyzed {_plural(len(files), 'file')} ({python} Python, {lines} lines)"]
    if listed:
        parts.append(f"a listing of {_plural(listed, 'file')}")
    if commands:
        parts.append(_plural(commands, "command result"))
    if texts:
        parts.append(_plural(texts, "text input"))
    severities = Counter(finding.severity for finding in findings)
    counts = (
        f"{_plural(severities['error'], 'error')}, {_plural(severities['warning'], 'warning')} "
        f"and {_plural(severities['info'], 'note')}"
    )
    return f"{', '.join(parts)}: {counts}."


def _metrics(
    files: list[FileMetrics], findings: list[Finding], listed: int, commands: int, texts: int
) -> dict[str, Any]:
    return {
        "files": [metrics.as_json() for metrics in files],
        "totals": {
            "files": len(files),
            "python_files": sum(1 for metrics in files if metrics.python),
            "lines": sum(metrics.lines for metrics in files),
            "bytes": sum(metrics.bytes for metrics in files),
            "functions": sum(metrics.functions for metrics in files),
            "classes": sum(metrics.classes for metrics in files),
            "listed_files": listed,
            "commands": commands,
            "text_inputs": texts,
        },
        "findings_total": len(findings),
        "findings_by_kind": dict(sorted(Counter(f.kind for f in findings).items())),
        "findings_by_severity": dict(sorted(Counter(f.severity for f in findings).items())),
    }


def location(finding: Finding) -> str:
    """``path:line`` (or just the path) in a code span; empty when the finding has no place."""
    if finding.path is None:
        return ""
    place = f"{finding.path}:{finding.line}" if finding.line is not None else finding.path
    return f"`{place}` "


def _report(
    instruction: str, summary: str, files: list[FileMetrics], findings: list[Finding]
) -> str:
    first_line = instruction.strip().split("\n")[0][:200]
    out = [OFFLINE_NOTICE, "", "# Analysis", "", f"> {first_line}", "", summary, "", "## Findings"]
    out.append("")
    if not findings:
        out.append("No findings.")
    for severity in ("error", "warning", "info"):
        group = [finding for finding in findings if finding.severity == severity]
        out += [f"- **{severity}** {location(f)}{f.message}" for f in group[:_MAX_LISTED]]
        if len(group) > _MAX_LISTED:
            out.append(f"- … and {len(group) - _MAX_LISTED} more {severity} findings")
    if files:
        out += [
            "",
            "## Largest files",
            "",
            "| File | Lines | Functions | Classes | Longest function |",
        ]
        out.append("|---|---:|---:|---:|---:|")
        for m in sorted(files, key=lambda item: (-item.lines, item.path))[:10]:
            out.append(
                f"| `{m.path}` | {m.lines} | {m.functions} | {m.classes} | {m.longest_function} |"
            )
    out += ["", "## Suggested improvements", "", *_suggestions(findings)]
    if EDIT_INTENT_RE.search(instruction):
        out += ["", "## Proposed edits (not applied)", "", *_edits(findings)]
    return "\n".join(out) + "\n"


def _suggestions(findings: list[Finding]) -> list[str]:
    by_kind: dict[str, list[Finding]] = {}
    for finding in findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    lines: list[str] = []
    for kind, template in _SUGGESTIONS.items():
        if kind in by_kind:
            group = by_kind[kind]
            places = sorted({(f.path or "") + (f":{f.line}" if f.line else "") for f in group})
            where = ", ".join(f"`{place}`" for place in places[:3] if place)
            where += ", …" if len(places) > 3 else ""
            text = template.format(n=len(group), where=where or "see findings")
            lines.append(f"{len(lines) + 1}. {text}")
    return lines or ["1. The static checks found nothing to improve; a review by a full LLM may."]


def _edits(findings: list[Finding]) -> list[str]:
    actions = {
        "unused_import": "delete the import: {message}",
        "syntax_error": "correct the code ({message})",
        "long_function": "extract parts into helpers: {message}",
    }
    edits = [
        f"- {location(f)}{actions[f.kind].format(message=f.message)}"
        for f in findings
        if f.kind in actions
    ]
    return edits[:10] or ["- No mechanical edit follows from the findings."]
