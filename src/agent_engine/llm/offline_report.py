"""The offline model's analyze task: measure every input section and write the Markdown report and
the structured findings (``findings``, ``metrics``) that the analysis JSON schema describes.

The report lists the findings by kind, most important first, each kind under its own ``###``
heading; the summarize task reads that layout back when it is given the report as text.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from agent_engine.llm.change_intent import asks_for_changes
from agent_engine.llm.offline_analysis import FileMetrics, measure_file
from agent_engine.llm.offline_coverage import ListedFile, find_untested_modules
from agent_engine.llm.offline_findings import (
    KIND_TITLES,
    NOT_SUGGESTIONS,
    Finding,
    location,
    rank_findings,
)
from agent_engine.llm.prompts import Section, TaskPrompt, parse_listing

OFFLINE_NOTICE = "_Produced by the offline model (deterministic, no LLM)._"
ANALYSIS_HEADING = "# Analysis"
SUGGESTIONS_HEADING = "## Suggested improvements"
MAX_FINDINGS = 200
MAX_SUGGESTIONS = 10
_MAX_LISTED_PER_KIND = 10
_EXIT_RE = re.compile(r"^exit code: (\S+)$", re.MULTILINE)
_TEST_SUMMARY_RE = re.compile(r"\b\d+ (passed|failed|errors?)\b")
_FAILED_RE = re.compile(r"^(?:FAILED|ERROR) ([^\s:]+)")
# Kinds whose suggestion is a mechanical edit, proposed when the instruction asks for changes.
_EDIT_KINDS = {
    "syntax_error",
    "unused_import",
    "mutable_default",
    "bare_except",
    "literal_identity",
}


def analyze_prompt(prompt: TaskPrompt) -> dict[str, Any]:
    """The analysis answer: ``report`` (Markdown), ``summary``, ``findings``, ``metrics``."""
    files: list[FileMetrics] = []
    findings: list[Finding] = []
    listing: dict[str, ListedFile] = {}
    contents: dict[str, ListedFile] = {}
    commands = texts = 0
    for section in prompt.sections:
        if section.kind == "file":
            complete = not (section.partial or section.truncated)
            metrics, found = measure_file(
                section.title, section.content, section.start_line, complete
            )
            files.append(metrics)
            findings += found
            contents[section.title] = ListedFile(
                section.title, None, section.content if section.start_line == 1 else None, complete
            )
        elif section.kind == "listing":
            for entry in parse_listing(section.content):
                listing.setdefault(entry.path, ListedFile(entry.path, entry.size))
        elif section.kind == "command":
            commands += 1
            findings += _command_findings(section)
        else:
            texts += 1
    if listing:
        findings += find_untested_modules(_with_contents(listing, contents))
    findings = rank_findings(findings)
    summary = _summary(files, findings, len(listing), commands, texts)
    metrics_json = _metrics(files, findings, len(listing), commands, texts)
    partial = {path for path, read in contents.items() if not read.complete}
    report = _report(prompt.instruction, summary, files, partial, findings)
    return {
        "source": "offline",
        "summary": summary,
        "report": report,
        "findings": [finding.as_json() for finding in findings[:MAX_FINDINGS]],
        "metrics": metrics_json,
    }


def _with_contents(
    listing: dict[str, ListedFile], contents: dict[str, ListedFile]
) -> list[ListedFile]:
    merged = []
    for path, entry in listing.items():
        read = contents.get(path)
        if read is None or read.content is None:
            merged.append(entry)
        else:
            merged.append(ListedFile(path, entry.size, read.content, read.complete))
    return merged


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
        Finding(
            "test_failure",
            match.group(1),
            None,
            line.strip()[:200],
            "error",
            f"Make `{line.split()[1]}` pass again.",
        )
        for line in lines
        if (match := _FAILED_RE.match(line))
    ]
    detail = f": {summary}" if summary else ""
    if code == "0":
        message = f"`{section.title}` succeeded{detail}"
        findings.append(Finding("command_succeeded", None, None, message, "info"))
    else:
        message = f"`{section.title}` exited with {code}{detail}"
        suggestion = f"Read the output of `{section.title}` and make it exit with 0."
        findings.append(Finding("command_failed", None, None, message, "error", suggestion))
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
        "occurrences_total": sum(finding.count for finding in findings),
        "findings_by_kind": dict(sorted(Counter(f.kind for f in findings).items())),
        "findings_by_severity": dict(sorted(Counter(f.severity for f in findings).items())),
    }


def finding_line(finding: Finding) -> str:
    """The report's bullet for one finding: severity, place and message."""
    return f"- **{finding.severity}** {location(finding)}{finding.message}"


def suggestion_line(number: int, finding: Finding) -> str:
    """The report's numbered suggestion for one finding: its place, then what to do."""
    return f"{number}. {location(finding)}{finding.suggestion}"


def top_suggestions(findings: list[Finding], limit: int, per_kind: int) -> list[Finding]:
    """Up to ``limit`` findings with distinct suggestions, in the order given, at most
    ``per_kind`` of one kind while other kinds have some left (ten long functions are one point)."""
    candidates: list[Finding] = []
    seen: set[str] = set()
    for finding in findings:
        key = location(finding) + finding.suggestion
        if finding.kind not in NOT_SUGGESTIONS and finding.suggestion and key not in seen:
            seen.add(key)
            candidates.append(finding)
    taken: Counter[str] = Counter()
    first: list[Finding] = []
    for finding in candidates:
        if taken[finding.kind] < per_kind:
            taken[finding.kind] += 1
            first.append(finding)
    chosen = first[:limit]
    chosen += [f for f in candidates if f not in first][: limit - len(chosen)]
    return sorted(chosen, key=candidates.index)


def _report(
    instruction: str,
    summary: str,
    files: list[FileMetrics],
    partial: set[str],
    findings: list[Finding],
) -> str:
    first_line = instruction.strip().split("\n")[0][:200]
    out = [OFFLINE_NOTICE, "", ANALYSIS_HEADING, "", f"> {first_line}", "", summary, ""]
    out += ["## Findings", ""]
    if not findings:
        out += ["No findings.", ""]
    by_kind: dict[str, list[Finding]] = {}
    for finding in findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    for kind, group in by_kind.items():
        occurrences = sum(f.count for f in group)
        out += [f"### {KIND_TITLES.get(kind, kind)} ({occurrences})", ""]
        out += [finding_line(f) for f in group[:_MAX_LISTED_PER_KIND]]
        if len(group) > _MAX_LISTED_PER_KIND:
            out.append(f"- … and {len(group) - _MAX_LISTED_PER_KIND} more")
        out.append("")
    whole = [m for m in files if m.path not in partial]
    if whole:
        out += ["## Largest files", "", "| File | Lines | Functions | Classes | Longest function |"]
        out.append("|---|---:|---:|---:|---:|")
        for m in sorted(whole, key=lambda item: (-item.lines, item.path))[:10]:
            out.append(
                f"| `{m.path}` | {m.lines} | {m.functions} | {m.classes} | {m.longest_function} |"
            )
        out.append("")
    chosen = top_suggestions(findings, MAX_SUGGESTIONS, per_kind=3)
    out += [SUGGESTIONS_HEADING, ""]
    out += [suggestion_line(n, f) for n, f in enumerate(chosen, start=1)] or [
        "1. The static checks found nothing to improve; a review by a full LLM may."
    ]
    if asks_for_changes(instruction):
        edits = [f"- {location(f)}{f.suggestion}" for f in findings if f.kind in _EDIT_KINDS]
        out += ["", "## Proposed edits (not applied)", ""]
        out += edits[:10] or ["- No mechanical edit follows from the findings."]
    return "\n".join(out) + "\n"
