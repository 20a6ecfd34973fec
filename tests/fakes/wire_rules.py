"""What the real APIs accept in a request's structured-output fields, checked by the fake servers.

Written from the vendors' documentation, independently of the providers' code: OpenAI Chat
Completions ``response_format`` (``text``, ``json_object``, ``json_schema`` with ``name``,
``schema``, ``strict``), function ``tools`` and a named ``tool_choice``; strict mode's rules (every
object closes with ``additionalProperties: false`` and requires all its properties; the root is
an object); JSON mode's rule that the messages mention JSON. Anthropic Messages ``tools`` (``name``,
``description``, ``input_schema`` of type object), ``tool_choice`` (``auto``, ``any``, ``none``,
or ``tool`` with a name) and no ``system`` role inside ``messages``.
"""

from __future__ import annotations

import re
from typing import Any

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_RESPONSE_FORMAT_TYPES = {"text", "json_object", "json_schema"}


def strict_schema_problems(schema: Any, where: str = "schema") -> list[str]:
    """Why strict mode would refuse ``schema`` (empty when it would accept it)."""
    if not isinstance(schema, dict):
        return [f"{where} is not an object"]
    problems: list[str] = []
    properties = schema.get("properties")
    if schema.get("type") == "object" or properties is not None:
        if schema.get("additionalProperties") is not False:
            problems.append(f"{where}: additionalProperties must be false in strict mode")
        names = set(properties or {})
        if set(schema.get("required") or []) != names:
            problems.append(f"{where}: every property must be required in strict mode")
        for name, child in (properties or {}).items():
            problems += strict_schema_problems(child, f"{where}.properties.{name}")
    if isinstance(schema.get("items"), dict):
        problems += strict_schema_problems(schema["items"], f"{where}.items")
    for index, child in enumerate(schema.get("anyOf") or []):
        problems += strict_schema_problems(child, f"{where}.anyOf[{index}]")
    for name, child in (schema.get("$defs") or {}).items():
        problems += strict_schema_problems(child, f"{where}.$defs.{name}")
    return problems


def openai_wire_problems(body: dict[str, Any]) -> list[str]:
    """Why the Chat Completions API would answer 400 to ``body``'s structured-output fields."""
    problems = _response_format_problems(body)
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            return [*problems, "tools must be a non-empty array"]
        for index, tool in enumerate(tools):
            problems += _openai_tool_problems(tool, f"tools[{index}]")
            if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
                names.add(str(tool["function"].get("name")))
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("none", "auto", "required"):
        function = choice.get("function") if isinstance(choice, dict) else None
        if (
            not isinstance(function, dict)
            or set(choice) != {"type", "function"}
            or choice["type"] != "function"
            or set(function) != {"name"}
        ):
            problems.append('tool_choice must be {"type": "function", "function": {"name": …}}')
        elif function["name"] not in names:
            problems.append(f"tool_choice names {function['name']!r}, which is not in tools")
    return problems


def _response_format_problems(body: dict[str, Any]) -> list[str]:
    response_format = body.get("response_format")
    if response_format is None:
        return []
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in _RESPONSE_FORMAT_TYPES:
        return [f"response_format.type must be one of {sorted(_RESPONSE_FORMAT_TYPES)}"]
    if kind != "json_schema":
        if set(response_format) != {"type"}:
            return [f"response_format of type {kind} takes no other field"]
        if kind == "json_object" and not _mentions_json(body.get("messages")):
            return ["'messages' must contain the word 'json' in some form to use json_object"]
        return []
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or set(spec) - {"name", "description", "schema", "strict"}:
        return ["response_format.json_schema must have name, schema, description, strict only"]
    problems = []
    if not isinstance(spec.get("name"), str) or not _NAME.match(spec["name"]):
        problems.append("response_format.json_schema.name must match [a-zA-Z0-9_-]{1,64}")
    schema = spec.get("schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        problems.append("response_format.json_schema.schema must be an object schema")
    elif spec.get("strict") is True:
        problems += strict_schema_problems(schema, "response_format.json_schema.schema")
    if "strict" in spec and not isinstance(spec["strict"], bool):
        problems.append("response_format.json_schema.strict must be a boolean")
    return problems


def _openai_tool_problems(tool: Any, where: str) -> list[str]:
    if (
        not isinstance(tool, dict)
        or tool.get("type") != "function"
        or set(tool)
        != {
            "type",
            "function",
        }
    ):
        return [f'{where} must be {{"type": "function", "function": {{…}}}}']
    function = tool["function"]
    if not isinstance(function, dict) or set(function) - {
        "name",
        "description",
        "parameters",
        "strict",
    }:
        return [f"{where}.function has unknown fields"]
    problems = []
    if not isinstance(function.get("name"), str) or not _NAME.match(function["name"]):
        problems.append(f"{where}.function.name must match [a-zA-Z0-9_-]{{1,64}}")
    parameters = function.get("parameters")
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        problems.append(f"{where}.function.parameters must be an object schema")
    elif function.get("strict") is True:
        problems += strict_schema_problems(parameters, f"{where}.function.parameters")
    return problems


def _mentions_json(messages: Any) -> bool:
    return isinstance(messages, list) and any(
        isinstance(m, dict) and "json" in str(m.get("content", "")).lower() for m in messages
    )


def anthropic_wire_problems(body: dict[str, Any]) -> list[str]:
    """Why the Messages API would answer 400 to ``body``'s tool fields or messages."""
    problems: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list) and any(
        isinstance(m, dict) and m.get("role") == "system" for m in messages
    ):
        problems.append("messages: roles must be user or assistant; use the top-level system")
    names: set[str] = set()
    for index, tool in enumerate(body.get("tools") or []):
        where = f"tools.{index}"
        if not isinstance(tool, dict) or set(tool) - {"name", "description", "input_schema"}:
            problems.append(f"{where}: only name, description and input_schema are allowed")
            continue
        if not isinstance(tool.get("name"), str) or not _NAME.match(tool["name"]):
            problems.append(f"{where}.name must match [a-zA-Z0-9_-]{{1,64}}")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            problems.append(f"{where}.input_schema: type must be object")
        names.add(str(tool.get("name")))
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind == "tool":
            if choice.get("name") not in names:
                problems.append("tool_choice.name must name one of the tools")
        elif kind not in ("auto", "any", "none"):
            problems.append("tool_choice.type must be auto, any, tool or none")
        elif kind != "none" and not names:
            problems.append("tool_choice needs tools")
    return problems
