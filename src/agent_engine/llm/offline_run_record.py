"""What a run did, read from the sections of a summarize prompt: the files read, the analyses and
their findings, the edits applied, the commands run and their test counts, and other text.

Findings are re-checked against the edits that follow them: a file whose text before the edit is
known is measured again after it; otherwise an unused import or a marker counts as resolved when
the edit removed its line and added none like it.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from agent_engine.llm.offline_analysis import is_python_path, is_test_path, measure_file
from agent_engine.llm.offline_edits import EditRecord, parse_edit
from agent_engine.llm.offline_findings import (
    GROUPED_KINDS,
    KIND_TITLES,
    Finding,
    finding_from_json,
    rank_findings,
)
from agent_engine.llm.offline_report import (
    ANALYSIS_HEADING,
    OFFLINE_NOTICE,
    SUGGESTIONS_HEADING,
    command_outcome,
)
from agent_engine.llm.prompts import Section, TaskPrompt, parse_listing

# Kinds that measuring a file again decides; findings of other kinds stay as they were.
FILE_KINDS = {
    "syntax_error", "mutable_default", "bare_except", "literal_identity", "assert_tuple",
    "long_function", "unused_import", "todo", "missing_docstring",
}  # fmt: skip
_PATHLESS_KINDS = {"command_failed", "command_succeeded", "no_tests"}
_TITLE_KINDS = {title: kind for kind, title in KIND_TITLES.items()}
_KIND_HEADING_RE = re.compile(r"^### (.+?) \(\d+\)$")
_BULLET_RE = re.compile(r"^- \*\*(error|warning|info)\*\* (.*)$")
_LOCATED_RE = re.compile(r"^`([^`]+?)(?::(\d+))?` (.*)$")
_SUGGESTION_RE = re.compile(r"^\d+\. (?:`([^`]+?)(?::(\d+))?` )?(.*)$")
_PYTEST_COUNT_RE = re.compile(
    r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b"
)
_PYTEST_LINE_RE = re.compile(r"^=*\s*(?:\d+ \w+(?:, )?)+ in \d+(?:\.\d+)?s\b")


@dataclass(frozen=True)
class FileRead:
    """A file section: its path, text and place among the sections."""

    position: int
    path: str
    content: str
    complete: bool


@dataclass
class Analysis:
    """An earlier analysis: its overview sentence (ours only) and its findings."""

    position: int
    number: str
    overview: str = ""
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class Edit:
    """An applied edit and its place among the sections."""

    position: int
    record: EditRecord


@dataclass(frozen=True)
class CommandRun:
    """A command result: the command, its exit code and the test counts its output reported."""

    command: str
    exit_code: str
    tests: str
    timed_out: bool


@dataclass
class RunRecord:
    """Everything the summary reports, in input order."""

    files: list[FileRead] = field(default_factory=list)
    listings: list[str] = field(default_factory=list)
    analyses: list[Analysis] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    commands: list[CommandRun] = field(default_factory=list)
    test_outputs: list[str] = field(default_factory=list)
    texts: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Resolution:
    """The findings still open after the run's edits (in their analyses' order), and those its
    edits resolved."""

    open: list[Finding]
    resolved: list[tuple[Finding, str]]  # the finding and the path of the edit that resolved it


def read_run(prompt: TaskPrompt) -> RunRecord:
    """Sort the prompt's sections into what the run read, analyzed, changed and ran."""
    record = RunRecord()
    by_number: dict[str, Analysis] = {}
    for position, section in enumerate(prompt.sections):
        if section.kind == "file":
            complete = not (section.partial or section.truncated)
            record.files.append(FileRead(position, section.title, section.content, complete))
        elif section.kind == "listing":
            record.listings.append(_describe_listing(section.content))
        elif section.kind == "edit":
            record.edits.append(Edit(position, parse_edit(section.title, section.content)))
        elif section.kind == "command":
            record.commands.append(_command(section))
        elif section.kind == "findings":
            analysis = by_number.get(section.title) or Analysis(position, section.title)
            if section.title not in by_number:
                record.analyses.append(analysis)
            analysis.findings = _json_findings(section.content)
        elif _is_offline_analysis(section.content):
            analysis = _report_analysis(position, section)
            by_number[section.title] = analysis
            record.analyses.append(analysis)
        elif tests := pytest_counts(section.content, strict=True):
            record.test_outputs.append(tests)
        elif _is_edit_proposal(section.content):
            continue  # a proposal is not a change: the edit that applied it is described
        elif not section.content.startswith(OFFLINE_NOTICE):
            # An earlier offline summary is not news; other text is quoted by its key sentences.
            record.texts.append((position, section.content))
    return record


def pytest_counts(output: str, *, strict: bool = False) -> str:
    """The counts of pytest's last summary line (``3 passed, 1 failed``), or "" without one.

    ``strict`` requires the line's ``in 0.12s`` ending, for text that need not be test output.
    """
    for line in reversed(output.split("\n")):
        counts = _PYTEST_COUNT_RE.findall(line)
        if counts and (not strict or _PYTEST_LINE_RE.match(line.strip())):
            return ", ".join(f"{number} {word}" for number, word in counts)
        if not strict and "no tests ran" in line:
            return "no tests ran"
    return ""


def resolve(record: RunRecord) -> Resolution:
    """Re-check every finding against the edits applied after its analysis."""
    open_findings: list[Finding] = []
    resolved: list[tuple[Finding, str]] = []
    measured: dict[tuple[str, int], list[Finding] | None] = {}
    for analysis in record.analyses:
        for finding in analysis.findings:
            path = _normal(finding.path or "")
            edits = [
                e.record
                for e in record.edits
                if e.position > analysis.position and _normal(e.record.path) == path
            ]
            if not edits or finding.kind not in FILE_KINDS:
                open_findings.append(finding)
                continue
            key = (path, analysis.position)
            if key not in measured:
                measured[key] = _after_edits(record, path, edits)
            after = measured[key]
            current = _recheck(finding, after, edits)
            if current is None:
                resolved.append((finding, edits[-1].path))
            else:
                open_findings.append(current)
    return Resolution(open_findings, resolved)


def _after_edits(record: RunRecord, path: str, edits: list[EditRecord]) -> list[Finding] | None:
    """The findings of ``path`` as it is after ``edits``, when its text can be known."""
    for read in record.files:
        if _normal(read.path) != path or not read.complete:
            continue
        text: str | None = read.content
        for edit in edits:
            if text is None:
                break
            applied = edit.apply(text)
            if applied is not None:
                text = applied
            elif edit.undo(text) is None:
                text = None  # neither the text the edit was made on nor its result
            # else: the file was read after the edit and already holds its result
        if text is not None:
            return rank_findings(measure_file(path, text)[1])
    return None


def _normal(path: str) -> str:
    return PurePosixPath(path).as_posix() if path else path


def _recheck(
    finding: Finding, after: list[Finding] | None, edits: list[EditRecord]
) -> Finding | None:
    """The finding as it stands after the edits, or None when they resolved it."""
    if after is not None:
        same_kind = [f for f in after if f.kind == finding.kind]
        if finding.kind in GROUPED_KINDS:
            return same_kind[0] if same_kind else None
        return next((f for f in same_kind if f.subject == finding.subject), None)
    removed = [text for edit in edits for _, text in edit.removed]
    added = [text for edit in edits for text in edit.added]
    if finding.kind == "unused_import" and finding.subject:
        name = finding.subject
        gone = any(name in _imported_names(line) for line in removed)
        if gone and not any(name in _imported_names(line) for line in added):
            return None
    if finding.kind == "todo" and finding.count == 1:
        marker = finding.message.strip()
        if any(line.strip() == marker for line in removed) and not any(
            line.strip() == marker for line in added
        ):
            return None
    return finding


def _imported_names(line: str) -> set[str]:
    try:
        tree = ast.parse(line.strip())
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {alias.name for alias in node.names}
    return names


def _describe_listing(content: str) -> str:
    paths = [entry.path for entry in parse_listing(content)]
    python = [path for path in paths if is_python_path(path)]
    tests = sum(1 for path in python if is_test_path(path))
    return f"{len(paths)} files ({len(python)} Python, {tests} test modules)"


def _command(section: Section) -> CommandRun:
    code, _ = command_outcome(section)
    stdout = section.content.split("--- stderr ---")[0]
    tests = pytest_counts(stdout) or pytest_counts(section.content)
    timed_out = "\ntimed out:" in f"\n{section.content}"
    return CommandRun(section.title, code, tests, timed_out)


def _json_findings(content: str) -> list[Finding]:
    findings = []
    for line in content.split("\n"):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (finding := finding_from_json(value)) is not None:
            findings.append(finding)
    return findings


def _is_edit_proposal(text: str) -> bool:
    """Whether ``text`` is a propose_edit output given as JSON (its edit and preview diff)."""
    if not text.startswith("{"):
        return False
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and {"edit", "preview_diff", "base_sha256"} <= value.keys()


def _is_offline_analysis(text: str) -> bool:
    return text.startswith(OFFLINE_NOTICE) and f"\n{ANALYSIS_HEADING}\n" in text


def _report_analysis(position: int, section: Section) -> Analysis:
    """An offline analysis report read back: its overview, findings and their suggestions."""
    lines = section.content.split("\n")
    analysis = Analysis(position, section.title)
    quote = next((i for i, line in enumerate(lines) if line.startswith("> ")), None)
    if quote is not None:
        analysis.overview = next((ln for ln in lines[quote + 1 :] if ln.strip()), "")
    kind = ""
    suggestions: list[tuple[str | None, int | None, str]] = []
    in_suggestions = False
    for line in lines:
        if line.startswith("## "):
            in_suggestions = line == SUGGESTIONS_HEADING
        elif heading := _KIND_HEADING_RE.match(line):
            kind = _TITLE_KINDS.get(heading.group(1), heading.group(1))
        elif (bullet := _BULLET_RE.match(line)) and kind and not in_suggestions:
            analysis.findings.append(_bullet_finding(kind, bullet.group(1), bullet.group(2)))
        elif in_suggestions and (item := _SUGGESTION_RE.match(line)):
            number = int(item.group(2)) if item.group(2) else None
            suggestions.append((item.group(1), number, item.group(3)))
    analysis.findings = _attach(analysis.findings, suggestions)
    return analysis


def _bullet_finding(kind: str, severity: str, rest: str) -> Finding:
    located = None if kind in _PATHLESS_KINDS else _LOCATED_RE.match(rest)
    if located is None:
        return Finding(kind, None, None, rest, severity)
    line = int(located.group(2)) if located.group(2) else None
    return Finding(kind, located.group(1), line, located.group(3), severity)


def _attach(
    findings: list[Finding], suggestions: list[tuple[str | None, int | None, str]]
) -> list[Finding]:
    """Give each finding the report's suggestion for its place (in report order)."""
    result = list(findings)
    for path, line, text in suggestions:
        for index, finding in enumerate(result):
            if (finding.path, finding.line) == (path, line) and not finding.suggestion:
                result[index] = replace(finding, suggestion=text)
                break
    return result
