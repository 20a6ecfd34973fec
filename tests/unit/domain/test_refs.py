"""References: where they sit in a step's input, and whether an output schema has their field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from agent_engine.domain.refs import iter_reference_locations, missing_output_field
from agent_engine.executors.edit_file import EditFileOutput
from agent_engine.executors.list_files import ListFilesOutput
from agent_engine.executors.llm_steps import LLMStepOutput
from agent_engine.executors.noop import NoopOutput
from agent_engine.executors.read_file import ReadFileOutput
from agent_engine.executors.run_command import RunCommandOutput


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=False, mode="serialization")


def test_reference_locations_are_dotted_paths_into_the_input() -> None:
    data = {
        "path": {"$ref": "steps.1.output.path"},
        "inputs": ["text", {"$ref": "steps.2.output"}, {"nested": [{"$ref": "steps.3.output"}]}],
        "not_a_ref": {"$ref": "steps.1.output", "extra": 1},
    }
    assert list(iter_reference_locations(data)) == [
        ("path", "steps.1.output.path"),
        ("inputs.1", "steps.2.output"),
        ("inputs.2.nested.0", "steps.3.output"),
    ]  # a dict with more keys than "$ref" is plain data, not a reference
    assert list(iter_reference_locations({"$ref": "steps.1.output"})) == [("", "steps.1.output")]


@pytest.mark.parametrize(
    ("model", "path"),
    [
        (ReadFileOutput, []),
        (ReadFileOutput, ["content"]),
        (ListFilesOutput, ["files"]),
        (ListFilesOutput, ["files", "3", "sha256"]),  # through a list item's $defs model
        (LLMStepOutput, ["structured", "findings", "0", "title"]),  # a dict of anything
        (EditFileOutput, ["before_sha256"]),  # Optional: anyOf string / null
        (NoopOutput, ["value", "answer", "deep"]),  # Any: nothing below is known
        (RunCommandOutput, ["argv", "0"]),
    ],
)
def test_fields_the_output_has_are_accepted(model: type[BaseModel], path: list[str]) -> None:
    assert missing_output_field(schema_of(model), path) is None


@pytest.mark.parametrize(
    ("model", "path", "message"),
    [
        (
            ReadFileOutput,
            ["nonexistent"],
            "the output has no 'nonexistent' (its fields are content, encoding, end_line, "
            "line_count, path, sha256, size, start_line)",
        ),
        (ReadFileOutput, ["content", "x"], "'content' has no 'x' (it is a string)"),
        (
            ListFilesOutput,
            ["files", "0", "name"],
            "'files.0' has no 'name' (its fields are path, sha256, size)",
        ),
        (ListFilesOutput, ["files", "path"], "'files' has no 'path' (it is a list (reached by"),
        (EditFileOutput, ["before_sha256", "hex"], "'before_sha256' has no 'hex' (it is a string)"),
        (NoopOutput, ["valeu"], "the output has no 'valeu' (its fields are attempt, value)"),
        (RunCommandOutput, ["exit_code", "x"], "'exit_code' has no 'x' (it is an integer)"),
    ],
)
def test_fields_the_output_lacks_are_named_with_what_is_there(
    model: type[BaseModel], path: list[str], message: str
) -> None:
    found = missing_output_field(schema_of(model), path)
    assert found is not None and found.startswith(message)


def test_hand_written_schemas_follow_objects_tuples_and_closed_maps() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"$ref": "#/$defs/P"}]},
            "closed": {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "either": {"oneOf": [{"$ref": "#/$defs/P"}, {"type": "string"}]},
        },
        "$defs": {"P": {"type": "object", "properties": {"x": {"type": "number"}}}},
    }
    assert missing_output_field(schema, ["pair", "1", "x"]) is None
    assert (
        missing_output_field(schema, ["pair", "0", "x"]) == "'pair.0' has no 'x' (it is a string)"
    )
    assert missing_output_field(schema, ["pair", "2"]) is not None  # a tuple of two
    assert missing_output_field(schema, ["closed", "a", "anything"]) is None
    assert missing_output_field(schema, ["closed", "b"]) == "'closed' has no 'b' (its fields are a)"
    assert missing_output_field(schema, ["counts", "any-key"]) is None
    assert missing_output_field(schema, ["counts", "k", "x"]) == (
        "'counts.k' has no 'x' (it is an integer)"
    )
    assert missing_output_field(schema, ["either", "x"]) is None  # one branch has it
    assert missing_output_field(schema, ["either", "y"]) == (
        "'either' has no 'y' (its fields are x)"
    )


def test_schemas_that_say_nothing_constrain_nothing() -> None:
    assert missing_output_field({}, ["a", "b"]) is None
    assert missing_output_field({"$ref": "https://elsewhere.test/schema"}, ["a"]) is None
    assert missing_output_field({"$ref": "#/$defs/missing"}, ["a"]) is None
