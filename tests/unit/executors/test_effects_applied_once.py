"""An effect is applied as its intent recorded it, once: when another attempt of the same step
applied the edit between this attempt's intent and its act (a worker whose lease lapsed while it
acted, beside the one that took the step over), the edit is found there, not applied again."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_engine.engine.effect_records import apply_as_intended
from agent_engine.errors import StaleEditError
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.edit_file import EDIT_FILE, EditFileInput, EditFileOutput

BASE = "base\n"
EDITED = "base\nmarker\n"


def _edit() -> EditFileInput:
    data = {"path": "a.txt", "operation": "replace", "old": BASE, "new": EDITED}
    return EDIT_FILE.validate_input(data)


async def test_an_edit_another_attempt_applied_meanwhile_is_found_not_applied_twice(
    root: Path, context: ExecutorContext
) -> None:
    (root / "a.txt").write_text(BASE)
    edit = _edit()
    intent = await EDIT_FILE.preview(edit, context)
    (root / "a.txt").write_text(EDITED)  # the other attempt acts first
    output = await apply_as_intended(EDIT_FILE, edit, intent, context)
    assert (root / "a.txt").read_text() == EDITED
    assert isinstance(output, dict) and output["after_sha256"] == intent["after_sha256"]


async def test_an_edit_whose_file_changed_otherwise_since_its_intent_is_refused(
    root: Path, context: ExecutorContext
) -> None:
    (root / "a.txt").write_text(BASE)
    edit = _edit()
    intent = await EDIT_FILE.preview(edit, context)
    (root / "a.txt").write_text("someone else\n" + BASE)
    with pytest.raises(StaleEditError):
        await apply_as_intended(EDIT_FILE, edit, intent, context)
    assert (root / "a.txt").read_text() == "someone else\n" + BASE


async def test_an_edit_on_the_file_its_intent_saw_is_applied_once(
    root: Path, context: ExecutorContext
) -> None:
    (root / "a.txt").write_text(BASE)
    edit = _edit()
    intent = await EDIT_FILE.preview(edit, context)
    output = await apply_as_intended(EDIT_FILE, edit, intent, context)
    assert (root / "a.txt").read_text() == EDITED
    assert isinstance(output, EditFileOutput) and output.after_sha256 == intent["after_sha256"]
