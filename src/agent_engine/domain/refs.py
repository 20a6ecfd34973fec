"""``{"$ref": "steps.N.output.field…"}``: step inputs that point at earlier steps' outputs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
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


def iter_reference_locations(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every ``(location, reference)`` inside ``value``, depth first; the location is dotted
    (``inputs.0``), ``""`` when ``value`` itself is the reference."""
    if is_reference(value):
        yield where, value["$ref"]
        return
    items: Iterable[tuple[Any, Any]] = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for key, item in items:
        yield from iter_reference_locations(item, f"{where}.{key}" if where else str(key))


def _resolve_pointer(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """Follow local ``{"$ref": "#/…"}`` pointers; anything else is returned as it is."""
    seen = 0
    while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and seen < 32:
        pointer = schema["$ref"]
        if not pointer.startswith("#/"):
            return {}  # a remote schema is not followed: treat it as unconstrained
        node: Any = root
        for token in pointer[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            node = node.get(token) if isinstance(node, Mapping) else None
        schema = node if isinstance(node, Mapping) else {}
        seen += 1
    return schema


def _types(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    if "properties" in schema or "additionalProperties" in schema:
        return {"object"}
    if "items" in schema or "prefixItems" in schema:
        return {"array"}
    return set()


def _object_child(schema: Mapping[str, Any], part: str) -> Any:
    properties = schema.get("properties")
    if isinstance(properties, Mapping) and part in properties:
        return properties[part]
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        return extra
    # A model's schema lists its fields and omits additionalProperties: its outputs have only
    # those fields. A bare "object" (a dict of anything) allows any key.
    if extra is True or (extra is None and not isinstance(properties, Mapping)):
        return {}
    return None


def _array_child(schema: Mapping[str, Any], part: str) -> Any:
    if not part.isdigit():
        return None
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list) and int(part) < len(prefix):
        return prefix[int(part)]
    items = schema.get("items")
    if isinstance(items, Mapping):
        return items
    return {} if items is None and prefix is None else None


def _children(schema: Any, part: str, root: Mapping[str, Any]) -> list[Any] | None:
    """The schemas ``part`` may lead to from ``schema`` (empty: none), or ``None`` when
    ``schema`` constrains nothing below it."""
    schema = _resolve_pointer(schema, root)
    if not isinstance(schema, Mapping):
        return None
    branches = [b for key in ("anyOf", "oneOf", "allOf") for b in schema.get(key) or []]
    types = _types(schema)
    if not branches and not types:
        return None
    found: list[Any] = []
    for branch in branches:
        below = _children(branch, part, root)
        if below is None:
            return None
        found.extend(below)
    child = _object_child(schema, part) if "object" in types else None
    if child is None and "array" in types:
        child = _array_child(schema, part)
    if child is not None:
        found.append(child)
    return found


_TYPE_NAMES = {
    "array": "a list (reached by index)",
    "boolean": "a boolean",
    "integer": "an integer",
    "null": "null",
    "number": "a number",
    "object": "an object",
    "string": "a string",
}


def _described(schemas: list[Any], root: Mapping[str, Any]) -> str:
    """What the schemas at a point of a path are, for a message: their fields or their type."""
    fields: set[str] = set()
    types: set[str] = set()
    pending = list(schemas)
    while pending:
        schema = _resolve_pointer(pending.pop(), root)
        if not isinstance(schema, Mapping):
            continue
        pending.extend(b for key in ("anyOf", "oneOf", "allOf") for b in schema.get(key) or [])
        types |= _types(schema)
        properties = schema.get("properties")
        if isinstance(properties, Mapping):
            fields |= set(properties)
    if fields:
        return "its fields are " + ", ".join(sorted(fields))
    shown = [_TYPE_NAMES.get(kind, kind) for kind in sorted(types - {"null"}) or sorted(types)]
    return "it is " + (" or ".join(shown) if shown else "empty")


def missing_output_field(schema: Mapping[str, Any], path: list[str]) -> str | None:
    """Why ``path`` names nothing in an output whose JSON schema is ``schema`` (``None``: it may
    name something), following nested objects, lists (by index) and ``$defs``."""
    frontier: list[Any] = [schema]
    for depth, part in enumerate(path):
        found: list[Any] = []
        for node in frontier:
            below = _children(node, part, schema)
            if below is None:
                return None
            found.extend(below)
        if not found:
            where = "the output" if depth == 0 else f"'{'.'.join(path[:depth])}'"
            return f"{where} has no {part!r} ({_described(frontier, schema)})"
        frontier = found
    return None


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
