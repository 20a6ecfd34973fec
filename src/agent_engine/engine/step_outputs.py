"""A step's output as it is recorded: JSON values every database can store, hash and serve,
no deeper than the recorded-document limit; anything else fails the step."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agent_engine.domain.text import NUMBER_PROBLEM, TEXT_PROBLEM, find_unstorable
from agent_engine.engine.request_limits import check_recorded_depth
from agent_engine.errors import ExecutorError


def dumped_output(step_number: int, output: BaseModel, max_depth: int) -> dict[str, Any]:
    """The output as JSON values; one too deep for the serializer fails as too deep."""
    try:
        return output.model_dump(mode="json")
    except ValueError:
        # Pydantic stops near 255 levels; its fields as given say whether that is what happened.
        check_recorded_depth(step_number, "output", dict(output), max_depth)
        raise


def storable_output(step_number: int, output: dict[str, Any], max_depth: int) -> dict[str, Any]:
    """The output, if every database can store it (and it can be hashed) and every read can
    serialize it; else the step fails."""
    check_recorded_depth(step_number, "output", output, max_depth)
    where = find_unstorable(output)
    if where is not None:
        raise ExecutorError(
            f"step {step_number}: output {where} cannot be stored: "
            f"{TEXT_PROBLEM}, and {NUMBER_PROBLEM}"
        )
    return output
