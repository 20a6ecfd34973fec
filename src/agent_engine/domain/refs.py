"""``{"$ref": "steps.N.output.field…"}``: step inputs that point at earlier steps' outputs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

_REF = re.compile(r"^steps\.(?P<number>[1-9][0-9]*)\.output(?P<path>(?:\.[^.]+)*)$")


class StepReferenceError(ValueError):
    """A reference that is malformed or points at nothing."""


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"$ref"} and isinstance(value["$ref"], str)


def parse_reference(text: str) -> tuple[int, list[str]]:
    """``"steps.2.output.content"`` → ``(2, ["content"])``."""
    match = _REF.match(text)
    if match is None:
        raise StepReferenceError(
            f"malformed reference {text!r}; expected 'steps.<n>.output[.field…]'"
        )
    path = [part for part in match.group("path").split(".") if part]
    return int(match.group("number")), path


def iter_references(value: Any) -> Iterator[str]:
    """Every reference string inside ``value``, depth first."""
    if is_reference(value):
        yield value["$ref"]
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_references(item)


def resolve_references(value: Any, outputs: Mapping[int, Any]) -> Any:
    """A copy of ``value`` with every reference replaced by the output it names."""
    if is_reference(value):
        number, path = parse_reference(value["$ref"])
        if number not in outputs:
            raise StepReferenceError(f"{value['$ref']!r}: step {number} has no output")
        node = outputs[number]
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise StepReferenceError(
                    f"{value['$ref']!r}: step {number}'s output has no {part!r}"
                )
        return node
    if isinstance(value, dict):
        return {key: resolve_references(item, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_references(item, outputs) for item in value]
    return value
