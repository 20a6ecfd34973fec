"""Delimited prompt sections: render inputs as ``### Heading`` + fenced content, and parse back.

A fence is always longer than the longest backtick run inside its content (as CommonMark allows),
so no content can close it early and the parser needs no escaping.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

# One input larger than this is cut (and marked) so a single huge file cannot crowd out the rest.
MAX_SECTION_CHARS = 200_000
# An earlier analysis passes on at most this many of its structured findings.
MAX_RENDERED_FINDINGS = 100

_HEADING_RE = re.compile(
    r"^### (?P<kind>[A-Za-z][A-Za-z ]*?)(?: (?P<number>\d+))?(?:: (?P<title>.*))?$"
)
_FENCE_OPEN_RE = re.compile(r"^(?P<fence>`{3,})[^`]*$")
_BACKTICK_RUN_RE = re.compile(r"`+")
_FILE_TITLE_RE = re.compile(
    r"^(?P<path>.+?)(?: \(lines (?P<start>\d+)-(?P<end>\d*)\))?(?P<truncated> \(truncated\))?$"
)
_LANGUAGES = {".py": "python", ".md": "markdown", ".toml": "toml", ".json": "json", ".yaml": "yaml"}


@dataclass(frozen=True)
class Section:
    """One delimited part of a prompt: ``kind`` is the heading in snake case (``file``, ``input``…).

    For files, ``title`` is the path and ``start_line`` the number of the content's first line.
    """

    kind: str
    title: str
    content: str
    start_line: int = 1
    partial: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class FileEntry:
    """A listed workspace file; ``size`` in bytes when the listing gave it."""

    path: str
    size: int | None = None


def fenced(content: str, info: str = "") -> str:
    """``content`` in a fenced block that nothing inside it can close."""
    longest = max((len(run) for run in _BACKTICK_RUN_RE.findall(content)), default=0)
    fence = "`" * max(3, longest + 1)
    body = content if not content or content.endswith("\n") else content + "\n"
    return f"{fence}{info}\n{body}{fence}"


def parse_sections(text: str) -> list[Section]:
    """Every heading immediately followed by a fenced block, in order; other text is ignored."""
    lines = text.split("\n")
    sections: list[Section] = []
    index = 0
    while index < len(lines) - 1:
        heading = _HEADING_RE.match(lines[index])
        opener = _FENCE_OPEN_RE.match(lines[index + 1]) if heading else None
        if heading is None or opener is None:
            index += 1
            continue
        fence = opener["fence"]
        end = index + 2
        while end < len(lines) and lines[end] != fence:
            end += 1
        content = "\n".join(lines[index + 2 : end])
        kind = heading["kind"].strip().lower().replace(" ", "_")
        title = heading["title"] if heading["title"] is not None else heading["number"] or ""
        sections.append(_section(kind, title, content))
        index = end + 1
    return sections


def parse_listing(content: str) -> list[FileEntry]:
    """The entries of a listing section: one ``path`` or ``path<TAB>size`` per line."""
    entries: list[FileEntry] = []
    for line in content.split("\n"):
        path, _, size = line.partition("\t")
        if path.strip():
            entries.append(FileEntry(path.strip(), int(size) if size.isdigit() else None))
    return entries


def render_input(number: int, value: Any) -> str:
    """One step input as a section: a file, a listing, a command result, an applied edit, or a
    numbered input (an earlier analysis adds a section of its structured findings)."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str) and isinstance(value.get("content"), str):
            return _render_file(value)
        if isinstance(value.get("files"), list):
            return _render_listing(value["files"])
        if isinstance(value.get("argv"), list) and _looks_like_command(value):
            return _render_command(value)
        if is_edit_output(value):
            return _render_edit(value)
        if isinstance(value.get("text"), str):
            return _render_text(number, value["text"]) + _render_findings(number, value)
    if isinstance(value, list) and value and all(_is_file_entry(item) for item in value):
        return _render_listing(value)
    if isinstance(value, str):
        return _render_text(number, value)
    as_json = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return _render_text(number, as_json, "json")


def is_edit_output(value: Any) -> bool:
    """Whether ``value`` is what an applied edit_file step returns (path, diff, new hash)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("path"), str)
        and isinstance(value.get("diff"), str)
        and isinstance(value.get("after_sha256"), str)
    )


def listing_line(entry: str | dict[str, Any]) -> str:
    """One listing line: the path, then a tab and the size in bytes when known."""
    if isinstance(entry, str):
        return _one_line(entry).replace("\t", " ")
    path = _one_line(str(entry.get("path", ""))).replace("\t", " ")
    size = entry.get("size", entry.get("size_bytes"))
    return f"{path}\t{size}" if isinstance(size, int) and not isinstance(size, bool) else path


def _section(kind: str, title: str, content: str) -> Section:
    if kind != "file":
        return Section(kind, title, content)
    match = _FILE_TITLE_RE.match(title)
    if match is None:
        return Section(kind, title, content)
    start = int(match["start"]) if match["start"] else 1
    return Section(
        kind,
        match["path"],
        content,
        start_line=start,
        partial=match["start"] is not None,
        truncated=match["truncated"] is not None,
    )


def _cut(content: str) -> tuple[str, bool]:
    if len(content) <= MAX_SECTION_CHARS:
        return content, False
    return content[:MAX_SECTION_CHARS], True


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def _render_file(value: dict[str, Any]) -> str:
    path = _one_line(value["path"])
    content, truncated = _cut(value["content"])
    start, end, total = value.get("start_line"), value.get("end_line"), value.get("line_count")
    title = path
    # read_file always names its line range; only a slice of the file is marked as one.
    cut_short = isinstance(end, int) and isinstance(total, int) and end < total
    if isinstance(start, int) and (start > 1 or cut_short):
        title += f" (lines {start}-{end if isinstance(end, int) else ''})"
    if truncated or value.get("truncated") is True:
        title += " (truncated)"
    language = _LANGUAGES.get(PurePosixPath(path).suffix, "")
    return f"### File: {title}\n{fenced(content, language)}"


def _is_file_entry(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("path"), str)


def _render_listing(files: list[Any]) -> str:
    lines = [listing_line(item) for item in files if isinstance(item, str) or _is_file_entry(item)]
    return f"### Listing: {len(lines)} files\n{fenced(chr(10).join(lines))}"


def _looks_like_command(value: dict[str, Any]) -> bool:
    return any(key in value for key in ("exit_code", "returncode", "stdout", "stderr"))


def _render_command(value: dict[str, Any]) -> str:
    argv = _one_line(shlex.join(str(part) for part in value["argv"]))
    code = value.get("exit_code", value.get("returncode"))
    body = [f"exit code: {code}"]
    if value.get("timed_out") is True:
        body.append("timed out: the command was stopped at its time limit")
    for stream in ("stdout", "stderr"):
        if isinstance(value.get(stream), str) and value[stream]:
            body += [f"--- {stream} ---", value[stream].rstrip("\n")]
    content, _ = _cut("\n".join(body))
    return f"### Command: {argv}\n{fenced(content)}"


def _render_edit(value: dict[str, Any]) -> str:
    # The diff says what changed; the hashes matter to the engine, not to a reader of the run.
    title = _one_line(value["path"]) + (" (created)" if value.get("before_sha256") is None else "")
    content, _ = _cut(value["diff"].rstrip("\n"))
    return f"### Edit: {title}\n{fenced(content, 'diff')}"


def _render_findings(number: int, value: dict[str, Any]) -> str:
    structured = value.get("structured")
    findings = structured.get("findings") if isinstance(structured, dict) else None
    if not isinstance(findings, list) or not findings:
        return ""
    kept = [item for item in findings if isinstance(item, dict)][:MAX_RENDERED_FINDINGS]
    lines = [json.dumps(item, sort_keys=True, ensure_ascii=False, default=str) for item in kept]
    content, _ = _cut("\n".join(lines))
    return f"\n### Findings {number}\n{fenced(content, 'jsonl')}"


def _render_text(number: int, text: str, info: str = "") -> str:
    content, truncated = _cut(text)
    note = f"\n(Input {number} was cut to {MAX_SECTION_CHARS} characters.)" if truncated else ""
    return f"### Input {number}\n{fenced(content, info)}{note}"
