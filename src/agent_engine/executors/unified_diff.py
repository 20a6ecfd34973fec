"""Unified diffs: a formatter, and a strict applier (no fuzz, no offsets, one file only).

Both work on text split on ``\\n`` only, so ``\\r`` and other separators stay part of a line and a
missing final newline is carried by the ``\\ No newline at end of file`` marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from agent_engine.errors import ExecutorError

NO_NEWLINE = "\\ No newline at end of file"
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_FILE_HEADERS = ("diff ", "index ", "--- ", "+++ ", "new file mode", "old mode", "new mode")


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` split on ``\\n`` only, each keeping its newline.

    ``str.splitlines()`` also breaks on ``\\r``, form feeds and ``\\u2028``, which would shift
    line numbers against every editor and make patches miss.
    """
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def _range(start: int, stop: int) -> str:
    # Same convention as difflib and GNU diff: an empty range names the line before it.
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def make_diff(before: str, after: str, path: str, *, new_file: bool = False) -> str:
    """The unified diff (3 lines of context) turning ``before`` into ``after``; "" if equal."""
    old, new = split_lines(before), split_lines(after)
    if old == new:
        return ""
    shown = path.removeprefix("./")
    out = [f"--- {'/dev/null' if new_file else 'a/' + shown}\n", f"+++ b/{shown}\n"]
    matcher = SequenceMatcher(None, old, new, autojunk=False)
    for group in matcher.get_grouped_opcodes(3):
        (_, i1, _, j1, _), (_, _, i2, _, j2) = group[0], group[-1]
        out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@\n")
        for tag, a1, a2, b1, b2 in group:
            body = [(" ", line) for line in old[a1:a2]] if tag == "equal" else []
            if tag != "equal":
                body = [("-", line) for line in old[a1:a2]] + [("+", line) for line in new[b1:b2]]
            for prefix, line in body:
                out.append(prefix + line)
                if not line.endswith("\n"):
                    out.append(f"\n{NO_NEWLINE}\n")
    return "".join(out)


@dataclass
class Hunk:
    """One parsed hunk: where it claims to apply and the exact old and new lines."""

    old_start: int
    old_len: int
    new_start: int
    new_len: int
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)


def _hunk_error(number: int, reason: str) -> ExecutorError:
    return ExecutorError(f"patch hunk {number}: {reason}", hunk=number)


def _read_hunk(lines: list[str], index: int, number: int) -> tuple[Hunk, int]:
    match = _HUNK_HEADER.match(lines[index])
    if match is None:
        raise _hunk_error(number, f"malformed hunk header {lines[index].rstrip()!r}")
    a, b, c, d = match.groups()
    hunk = Hunk(int(a), int(b or 1), int(c), int(d or 1))
    index += 1
    last: tuple[list[str], ...] = ()  # the sides the previous body line went to
    while len(hunk.old) < hunk.old_len or len(hunk.new) < hunk.new_len:
        if index >= len(lines):
            raise _hunk_error(number, "ends before the line counts in its header are reached")
        line = lines[index]
        index += 1
        tag, text = (" ", "\n") if line == "\n" else (line[0], line[1:])
        if tag == "\\":
            last = _strip_final_newline(last, number)
            continue
        targets = {" ": (hunk.old, hunk.new), "-": (hunk.old,), "+": (hunk.new,)}.get(tag)
        if targets is None:
            raise _hunk_error(number, f"unexpected line {line.rstrip()!r}")
        for target in targets:
            target.append(text)
        last = targets
        if len(hunk.old) > hunk.old_len or len(hunk.new) > hunk.new_len:
            raise _hunk_error(number, "has more lines than its header says")
    if index < len(lines) and lines[index].startswith("\\"):
        _strip_final_newline(last, number)
        index += 1
    return hunk, index


def _strip_final_newline(last: tuple[list[str], ...], number: int) -> tuple[list[str], ...]:
    if not last or not all(side[-1].endswith("\n") for side in last):
        raise _hunk_error(number, "misplaced 'No newline at end of file' marker")
    for side in last:
        side[-1] = side[-1][:-1]
    return ()


def parse_diff(diff: str) -> list[Hunk]:
    """The hunks of a single-file unified diff; anything else is refused."""
    lines = split_lines(diff)
    # A context line ' ' and a bare newline look alike once the final '\n' is missing.
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    hunks: list[Hunk] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("@@"):
            hunk, index = _read_hunk(lines, index, len(hunks) + 1)
            hunks.append(hunk)
        elif line.startswith(_FILE_HEADERS) and not hunks:
            index += 1
        elif line.startswith(_FILE_HEADERS):
            raise ExecutorError("the diff touches more than one file; send one edit per file")
        else:
            raise ExecutorError(f"unexpected line in diff: {line.rstrip()[:80]!r}")
    if not hunks:
        raise ExecutorError("the diff contains no hunks")
    return hunks


def apply_diff(before: str, diff: str) -> str:
    """Apply a unified diff exactly: every hunk at its stated line, context matching verbatim."""
    source = split_lines(before)
    out: list[str] = []
    position = 0
    for number, hunk in enumerate(parse_diff(diff), start=1):
        start = hunk.old_start - 1 if hunk.old_len else hunk.old_start
        if start < position:
            raise _hunk_error(number, "overlaps the previous hunk or is out of order")
        expected_new_start = len(out) + (start - position) + (1 if hunk.new_len else 0)
        if hunk.new_start != expected_new_start:
            raise _hunk_error(
                number,
                f"header says +{hunk.new_start} but the result puts it at line "
                f"{expected_new_start}",
            )
        actual = source[start : start + hunk.old_len]
        if actual != hunk.old:
            offset = next(
                (i for i, (x, y) in enumerate(zip(actual, hunk.old, strict=False)) if x != y),
                min(len(actual), len(hunk.old)),
            )
            raise _hunk_error(
                number,
                f"does not apply at line {start + offset + 1}: expected "
                f"{_shown_line(hunk.old, offset)}, found {_shown_line(actual, offset)}",
            )
        out.extend(source[position:start])
        out.extend(hunk.new)
        position = start + hunk.old_len
    out.extend(source[position:])
    return "".join(out)


def _shown_line(lines: list[str], index: int) -> str:
    return repr(lines[index][:120]) if index < len(lines) else "end of file"
