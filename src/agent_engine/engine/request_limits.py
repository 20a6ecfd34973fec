"""The server's configured limits on what a request (or the planner) may ask for, and the
checks that refuse anything over them with a 422 naming the setting."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent_engine.access_errors import (
    JsonTooDeepError,
    StepInputTooLargeError,
    StringTooLongError,
    TooManyMetadataKeysError,
    TooManyStepsError,
)
from agent_engine.config import Settings
from agent_engine.domain.canonical import wire_json
from agent_engine.domain.json_depth import exceeds_depth
from agent_engine.domain.plan import Plan
from agent_engine.errors import DocumentTooDeepError

SETTINGS = {
    "max_json_depth": "AGENT_ENGINE_MAX_JSON_DEPTH",
    "max_plan_steps": "AGENT_ENGINE_MAX_PLAN_STEPS",
    "max_metadata_keys": "AGENT_ENGINE_MAX_METADATA_KEYS",
    "max_string_chars": "AGENT_ENGINE_MAX_STRING_CHARS",
    "max_step_input_bytes": "AGENT_ENGINE_MAX_STEP_INPUT_BYTES",
}


@dataclass(frozen=True)
class RequestLimits:
    """The "Request limits" settings, as the engine's services use them."""

    max_json_depth: int = 64
    max_plan_steps: int = 500
    max_metadata_keys: int = 100
    max_string_chars: int = 10_000
    max_step_input_bytes: int = 262_144

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(**{name: getattr(settings, name) for name in SETTINGS})


def check_plan(plan: Plan, limits: RequestLimits) -> None:
    """Refuse a plan with more steps than allowed, or a step whose input is too large or too
    deep. Applies to explicit plans and to the planner's alike."""
    if len(plan.steps) > limits.max_plan_steps:
        raise TooManyStepsError(
            f"the plan has {len(plan.steps)} steps; at most {limits.max_plan_steps} are allowed "
            f"({SETTINGS['max_plan_steps']})",
            limit=SETTINGS["max_plan_steps"],
            maximum=limits.max_plan_steps,
            errors=[{"field": "steps", "message": "too many steps"}],
        )
    for number, step in enumerate(plan.steps, start=1):
        field = f"steps.{number - 1}.input_data"
        if exceeds_depth(step.input_data, limits.max_json_depth):
            raise JsonTooDeepError(
                f"step {number}: input_data nests deeper than {limits.max_json_depth} levels "
                f"({SETTINGS['max_json_depth']})",
                limit=SETTINGS["max_json_depth"],
                maximum=limits.max_json_depth,
                errors=[{"field": field, "step_number": number, "message": "nested too deep"}],
            )
        size = len(wire_json(step.input_data).encode())
        if size > limits.max_step_input_bytes:
            raise StepInputTooLargeError(
                f"step {number}: input_data is {size} bytes as JSON; at most "
                f"{limits.max_step_input_bytes} are allowed ({SETTINGS['max_step_input_bytes']})",
                limit=SETTINGS["max_step_input_bytes"],
                maximum=limits.max_step_input_bytes,
                errors=[{"field": field, "step_number": number, "message": "too large"}],
            )


def _keys(value: Any) -> Iterator[str]:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            yield from item
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _long_string(value: Any, limit: int, path: str) -> str | None:
    """The path of the first key or string value longer than ``limit`` characters."""
    pending: list[tuple[Any, str]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            if len(item) > limit:
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                if len(key) > limit:
                    return f"{where}.{key[:40]}…"
                pending.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            pending.extend((child, f"{where}.{index}") for index, child in enumerate(item))
    return None


def check_metadata(metadata: dict[str, Any], limits: RequestLimits) -> None:
    """Refuse metadata with more keys (at every level) than allowed."""
    keys = sum(1 for _ in _keys(metadata))
    if keys > limits.max_metadata_keys:
        raise TooManyMetadataKeysError(
            f"metadata has {keys} keys; at most {limits.max_metadata_keys} are allowed "
            f"({SETTINGS['max_metadata_keys']})",
            limit=SETTINGS["max_metadata_keys"],
            maximum=limits.max_metadata_keys,
            errors=[{"field": "metadata", "message": "too many keys"}],
        )


def check_strings(fields: dict[str, Any], limits: RequestLimits) -> None:
    """Refuse a key or string in any of ``fields`` (by name) longer than allowed."""
    for name, value in fields.items():
        where = _long_string(value, limits.max_string_chars, name)
        if where is not None:
            raise StringTooLongError(
                f"{where}: strings may have at most {limits.max_string_chars} characters "
                f"({SETTINGS['max_string_chars']})",
                limit=SETTINGS["max_string_chars"],
                maximum=limits.max_string_chars,
                errors=[{"field": where, "message": "string too long"}],
            )


def check_recorded_depth(step_number: int, what: str, document: Any, limit: int) -> None:
    """Fail a step whose resolved input or output nests deeper than recorded documents may
    (references can stack outputs into inputs; a model can answer deeply nested JSON)."""
    if exceeds_depth(document, limit):
        raise DocumentTooDeepError(
            f"step {step_number}: {what} nests deeper than {limit} levels "
            f"({SETTINGS['max_json_depth']}); it is not recorded",
            limit=SETTINGS["max_json_depth"],
            maximum=limit,
        )
