"""Applied edits as the summarize task sees them: the unified diff of an ``### Edit:`` section,
read into hunks that can be applied to (or recognised in) a file's text, strictly, without fuzz.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HUNK_HEADER_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_FILE_HEADERS = ("--- ", "+++ ", "diff ", "index ")


@dataclass(frozen=True)
class Hunk:
    """One hunk: where it starts on each side and the lines each side has there."""

    old_start: int
    new_start: int
    old: tuple[str, ...]
    new: tuple[str, ...]
    removed: tuple[tuple[int, str], ...]  # (line number before the edit, text)
    added: tuple[str, ...]


@dataclass(frozen=True)
class EditRecord:
    """An edit the run applied to ``path`` (``created``: the file did not exist before)."""

    path: str
    created: bool
    hunks: tuple[Hunk, ...]

    @property
    def removed(self) -> list[tuple[int, str]]:
        """Every removed line with its number before the edit."""
        return [line for hunk in self.hunks for line in hunk.removed]

    @property
    def added(self) -> list[str]:
        """Every added line."""
        return [line for hunk in self.hunks for line in hunk.added]

    def apply(self, text: str) -> str | None:
        """``text`` after the edit, or None when ``text`` is not what the edit was made on."""
        return _apply(text, [(h.old_start, h.old, h.new) for h in self.hunks])

    def undo(self, text: str) -> str | None:
        """``text`` before the edit, or None when ``text`` is not what the edit produced."""
        return _apply(text, [(h.new_start, h.new, h.old) for h in self.hunks])


def parse_edit(title: str, diff: str) -> EditRecord:
    """The edit of an ``### Edit: path`` section (a ``(created)`` suffix marks a new file)."""
    created = title.endswith(" (created)")
    path = title.removesuffix(" (created)")
    hunks: list[Hunk] = []
    lines = diff.rstrip("\n").split("\n")
    index = 0
    while index < len(lines):
        header = _HUNK_HEADER_RE.match(lines[index])
        index += 1
        if header is None:
            continue
        old_start, new_start = int(header.group(1)), int(header.group(3))
        old: list[str] = []
        new: list[str] = []
        removed: list[tuple[int, str]] = []
        added: list[str] = []
        while index < len(lines) and not _HUNK_HEADER_RE.match(lines[index]):
            line = lines[index]
            index += 1
            if line.startswith(_FILE_HEADERS) or line.startswith("\\"):
                continue
            marker, text = line[:1], line[1:]
            if marker == "-":
                removed.append((old_start + len(old), text))
                old.append(text)
            elif marker == "+":
                added.append(text)
                new.append(text)
            elif marker in (" ", ""):
                old.append(text)
                new.append(text)
        hunk = Hunk(old_start, new_start, tuple(old), tuple(new), tuple(removed), tuple(added))
        hunks.append(hunk)
    return EditRecord(path, created, tuple(hunks))


def _apply(text: str, hunks: list[tuple[int, tuple[str, ...], tuple[str, ...]]]) -> str | None:
    lines = text.split("\n")
    result: list[str] = []
    position = 0
    for start, before, after in hunks:
        # An empty side names the line before the hunk, as difflib and GNU diff write it.
        begin = start - 1 if before else start
        if begin < position or lines[begin : begin + len(before)] != list(before):
            return None
        result += lines[position:begin] + list(after)
        position = begin + len(before)
    if not hunks:
        return None
    return "\n".join(result + lines[position:])
