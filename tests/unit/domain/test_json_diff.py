"""The first difference of two JSON documents, and of two runs' steps, as data."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from agent_engine.domain.canonical import canonical_json, content_hash
from agent_engine.domain.json_diff import MAX_SHOWN_BYTES, Difference, first_difference
from agent_engine.domain.records import StepRecord
from agent_engine.domain.step_diff import divergence_of


def test_equal_documents_have_no_difference() -> None:
    document = {"a": [1, {"b": "x"}], "c": None}
    assert first_difference(document, {"c": None, "a": [1, {"b": "x"}]}) is None


def test_the_path_names_keys_with_dots_and_items_with_brackets() -> None:
    found = first_difference({"argv": ["a", "b", "c"]}, {"argv": ["a", "b", "d"]}, "input_data")
    assert found == Difference("input_data.argv[2]", "c", "d")


def test_keys_are_walked_in_sorted_order_unless_some_come_first() -> None:
    before, after = {"a": 1, "z": 1}, {"a": 2, "z": 2}
    assert first_difference(before, after).path == "a"  # type: ignore[union-attr]
    assert first_difference(before, after, first=("z",)).path == "z"  # type: ignore[union-attr]
    assert first_difference(before, after, ignore=("a", "z")) is None


def test_a_missing_key_or_item_says_which_side_lacks_it() -> None:
    assert first_difference({"a": 1}, {}) == Difference("a", 1, None, absent="actual")
    assert first_difference([1], [1, 2], "x") == Difference("x[1]", None, 2, absent="expected")


def test_a_boolean_is_not_a_number_but_an_int_equals_its_float() -> None:
    assert first_difference({"n": 1}, {"n": True}) == Difference("n", 1, True)
    assert first_difference({"n": 1}, {"n": 1.0}) is None
    assert first_difference({"n": "1"}, {"n": 1}) == Difference("n", "1", 1)


def test_a_large_value_is_shown_as_its_hash_and_size() -> None:
    big = "x" * (MAX_SHOWN_BYTES + 1)
    found = first_difference({"content": big}, {"content": "small"})
    assert found is not None
    encoded = canonical_json(big)
    assert found.expected == {"sha256": hashlib.sha256(encoded).hexdigest(), "size": len(encoded)}
    assert found.actual == "small"


def _step(number: int, step_type: str, output: dict[str, Any] | None, **fields: Any) -> StepRecord:
    input_data = fields.pop("input_data", {"path": "a.py"})
    return StepRecord(
        id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        step_number=number,
        step_type=step_type,
        status=fields.pop("status", "completed"),
        input_data=input_data,
        output_data=output,
        output_hash=content_hash(output) if output is not None else None,
        **fields,
    )


def _command(stdout: str, duration_ms: int) -> dict[str, Any]:
    return {
        "argv": ["pytest"],
        "exit_code": 1,
        "stdout": stdout,
        "stderr": "",
        "duration_ms": duration_ms,
    }


def test_a_command_diverges_on_its_output_never_on_its_duration() -> None:
    same = divergence_of(
        _step(1, "run_command", _command("ok", 5)), _step(1, "run_command", _command("ok", 9))
    )
    assert same["verdict"] == "match"
    found = divergence_of(
        _step(1, "run_command", _command("1 passed", 5)),
        _step(1, "run_command", _command("1 failed", 5)),
    )
    assert (found["verdict"], found["field"]) == ("diverged", "output.stdout")
    assert (found["expected"], found["actual"]) == ("1 passed", "1 failed")
    assert found["expected_hash"] != found["actual_hash"]


def test_a_file_read_diverges_on_its_hash_and_names_the_file() -> None:
    def read(content: str, with_hash: bool) -> dict[str, Any]:
        output: dict[str, Any] = {"path": "src/x.py", "content": content}
        if with_hash:
            output["sha256"] = hashlib.sha256(content.encode()).hexdigest()
        return output

    # An output recorded without a hash gets it computed from its content.
    found = divergence_of(
        _step(2, "read_file", read("a", False)), _step(2, "read_file", read("b", True))
    )
    assert (found["field"], found["file"]) == ("output.sha256", "src/x.py")
    assert found["expected_sha256"] == hashlib.sha256(b"a").hexdigest() == found["expected"]
    assert found["actual_sha256"] == hashlib.sha256(b"b").hexdigest() == found["actual"]


def test_reused_steps_match_and_unfinished_ones_are_not_reached() -> None:
    original = _step(1, "analyze", {"text": "a"})
    reused = _step(1, "analyze", {"text": "a"}, reused_from=original.id)
    assert divergence_of(original, reused) == {
        "step_number": 1,
        "step_type": "analyze",
        "status": "completed",
        "reused": True,
        "verdict": "match",
    }
    pending = _step(1, "analyze", None, status="pending")
    assert divergence_of(original, pending)["verdict"] == "not_reached"
    assert divergence_of(original, None)["verdict"] == "not_reached"
    extra = divergence_of(None, _step(5, "analyze", {"text": "a"}))
    assert (extra["verdict"], extra["field"], extra["absent"]) == ("diverged", "step", "expected")


def test_inputs_are_compared_as_planned_then_as_resolved() -> None:
    planned = {"instruction": "go", "inputs": [{"$ref": "steps.1.output.text"}]}
    before = _step(
        2, "analyze", {"text": "x"}, input_data=planned, resolved_input={"inputs": ["one"]}
    )
    after = _step(
        2, "analyze", {"text": "y"}, input_data=planned, resolved_input={"inputs": ["two"]}
    )
    found = divergence_of(before, after)
    assert (found["field"], found["expected"], found["actual"]) == (
        "resolved_input.inputs[0]",
        "one",
        "two",
    )
    assert "expected_hash" not in found  # an input difference: no output hashes


def test_a_step_rejected_in_both_runs_matches_and_one_not_yet_decided_is_not_reached() -> None:
    command = {"argv": ["python3", "-c", "pass"]}
    rejected = divergence_of(
        _step(2, "run_command", None, status="rejected", input_data=command),
        _step(2, "run_command", None, status="rejected", input_data=command),
    )
    assert rejected["verdict"] == "match"
    waiting = divergence_of(
        _step(2, "run_command", None, status="rejected", input_data=command),
        _step(2, "run_command", None, status="awaiting_approval", input_data=command),
    )
    assert waiting["verdict"] == "not_reached"
    approved_instead = divergence_of(
        _step(2, "run_command", None, status="rejected", input_data=command),
        _step(2, "run_command", _command("ok", 1), status="completed", input_data=command),
    )
    assert (approved_instead["verdict"], approved_instead["field"]) == ("diverged", "status")
