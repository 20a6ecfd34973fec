"""A unified diff laid out side by side for a page: old lines left, new lines right, changed
pairs with the changed characters marked."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$")
# Changes are marked by whole words (and single other characters), as people read them.
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
MAX_ROWS = 5000


@dataclass(frozen=True)
class Segment:
    """A piece of a line; ``changed`` pieces are highlighted."""

    text: str
    changed: bool = False


@dataclass(frozen=True)
class Side:
    number: int | None
    segments: tuple[Segment, ...]
    kind: str  # context | removed | added | empty


@dataclass(frozen=True)
class Row:
    """One row of the side-by-side table (``hunk``: a header row spanning both sides)."""

    left: Side
    right: Side
    hunk: str | None = None


_EMPTY = Side(None, (), "empty")


def _marked(old: str, new: str) -> tuple[tuple[Segment, ...], tuple[Segment, ...]]:
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    left: list[Segment] = []
    right: list[Segment] = []
    for tag, a1, a2, b1, b2 in matcher.get_opcodes():
        if a2 > a1:
            left.append(Segment("".join(a[a1:a2]), tag != "equal"))
        if b2 > b1:
            right.append(Segment("".join(b[b1:b2]), tag != "equal"))
    return tuple(left), tuple(right)


def _flush(removed: list[tuple[int, str]], added: list[tuple[int, str]], rows: list[Row]) -> None:
    for index in range(max(len(removed), len(added))):
        old = removed[index] if index < len(removed) else None
        new = added[index] if index < len(added) else None
        if old is not None and new is not None:
            left, right = _marked(old[1], new[1])
            rows.append(Row(Side(old[0], left, "removed"), Side(new[0], right, "added")))
        elif old is not None:
            rows.append(Row(Side(old[0], (Segment(old[1]),), "removed"), _EMPTY))
        elif new is not None:
            rows.append(Row(_EMPTY, Side(new[0], (Segment(new[1]),), "added")))
    removed.clear()
    added.clear()


def side_by_side(unified: str) -> list[Row]:
    """The rows of ``unified`` (a unified diff, as edit_file and plan diffs make them)."""
    rows: list[Row] = []
    removed: list[tuple[int, str]] = []
    added: list[tuple[int, str]] = []
    old_line = new_line = 0
    for line in unified.splitlines():
        if len(rows) >= MAX_ROWS:
            break
        if line.startswith(("--- ", "+++ ")) and not removed and not added:
            continue
        header = _HUNK.match(line)
        if header:
            _flush(removed, added, rows)
            old_line, new_line = int(header.group(1)), int(header.group(2))
            rows.append(Row(_EMPTY, _EMPTY, hunk=line))
        elif line.startswith("-"):
            removed.append((old_line, line[1:]))
            old_line += 1
        elif line.startswith("+"):
            added.append((new_line, line[1:]))
            new_line += 1
        elif line.startswith("\\"):
            continue  # "\ No newline at end of file"
        else:
            _flush(removed, added, rows)
            text = line[1:] if line.startswith(" ") else line
            rows.append(
                Row(
                    Side(old_line, (Segment(text),), "context"),
                    Side(new_line, (Segment(text),), "context"),
                )
            )
            old_line += 1
            new_line += 1
    _flush(removed, added, rows)
    return rows
