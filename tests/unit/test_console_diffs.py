"""The console's side-by-side diff and its money and duration formats."""

from __future__ import annotations

import difflib
from decimal import Decimal

from agent_engine.ui.diffs import side_by_side
from agent_engine.ui.render import duration, money


def _unified(before: str, after: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), "a/f", "b/f", lineterm="", n=1
    )
    return "\n".join(lines)


def test_a_changed_line_pairs_with_its_replacement_and_marks_the_changed_word() -> None:
    rows = side_by_side(_unified("one\ntwo\nthree\n", "one\nTWO\nthree\n"))
    assert rows[0].hunk == "@@ -1,3 +1,3 @@"
    changed = rows[2]
    assert (changed.left.kind, changed.right.kind) == ("removed", "added")
    assert (changed.left.number, changed.right.number) == (2, 2)
    assert [(s.text, s.changed) for s in changed.left.segments] == [("two", True)]
    assert [(s.text, s.changed) for s in changed.right.segments] == [("TWO", True)]
    assert rows[3].left.segments[0].text == "three" and rows[3].left.number == 3


def test_lines_only_added_or_only_removed_face_an_empty_side() -> None:
    rows = side_by_side(_unified("a\nb\n", "a\nb\nc\nd\n"))
    added = [r for r in rows if r.right.kind == "added"]
    assert [r.right.number for r in added] == [3, 4]
    assert all(r.left.kind == "empty" and r.left.number is None for r in added)
    removed = side_by_side(_unified("a\nb\nc\n", "a\n"))
    gone = [r for r in removed if r.left.kind == "removed"]
    assert [r.left.number for r in gone] == [2, 3] and all(r.right.kind == "empty" for r in gone)


def test_only_the_differing_words_of_a_line_are_marked() -> None:
    rows = side_by_side(_unified('x = "Hello, world"\n', 'x = "Hello, there"\n'))
    left = rows[1].left.segments
    assert [s.text for s in left if s.changed] == ["world"]
    assert "".join(s.text for s in left) == 'x = "Hello, world"'


def test_money_keeps_the_digits_that_matter_and_durations_read_as_people_say_them() -> None:
    assert money(Decimal("0")) == "$0"
    assert money(Decimal("1.500000000")) == "$1.50"
    assert money(Decimal("0.000123000")) == "$0.000123"
    assert money(None) == "—"
    assert duration(35.4) == "35 ms" and duration(1234) == "1.2 s"
    assert duration(184_000) == "3 min 4 s" and duration(None) == "—"
