"""The offline model: the engine's embedded default LLM. Deterministic, no network, $0.

It reads only the text of the messages: the task marker and the delimited sections written by
:mod:`agent_engine.llm.prompts`. Plans are rule-based, analyses are static measures (``ast``),
summaries are extractive, edits are the simple ones it can be sure of; any other request gets
the key sentences of its last user message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from agent_engine.llm.base import CompletionRequest, CompletionResponse, LLMProvider, Usage
from agent_engine.llm.edit_prompts import TASK_PROPOSE_EDIT, parse_propose_edit_prompt
from agent_engine.llm.offline_planning import plan_from_prompt
from agent_engine.llm.offline_proposals import propose_edit_answer
from agent_engine.llm.offline_report import analyze_prompt
from agent_engine.llm.offline_revision import revise_from_prompt
from agent_engine.llm.offline_summary import answer_generic, summarize_prompt
from agent_engine.llm.prompts import (
    TASK_ANALYZE,
    TASK_PLAN,
    TASK_SUMMARIZE,
    detect_task,
    parse_plan_prompt,
    parse_task_prompt,
)
from agent_engine.llm.revision_prompts import TASK_REVISE, parse_revision_prompt
from agent_engine.llm.tokens import estimate_message_tokens, estimate_tokens

DEFAULT_MODEL = "offline-1"
# Above this many prompt characters the work moves to a thread so the event loop stays free.
_THREAD_THRESHOLD_CHARS = 100_000
# String fields of a caller's JSON schema that receive the answer text.
_TEXT_FIELDS = ("text", "answer", "summary", "report", "content", "result", "response")


class OfflineProvider(LLMProvider):
    """Answers plan, analyze, summarize and propose_edit requests deterministically; any model
    name works."""

    name = "offline"

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """Answer ``request``: the same request always gets a byte-identical response."""
        size = sum(len(message.content) for message in request.messages)
        if size > _THREAD_THRESHOLD_CHARS:
            return await asyncio.to_thread(self.answer, request, model)
        return self.answer(request, model)

    def answer(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """The synchronous core of :meth:`complete` (pure: no I/O, no clock, no randomness)."""
        model = model or DEFAULT_MODEL
        task = detect_task(request.messages) or "generic"
        value: Any = None
        if task == TASK_PLAN:
            value = plan_from_prompt(parse_plan_prompt(request.messages))
            text = _dumps(value)
        elif task == TASK_REVISE:
            value = revise_from_prompt(parse_revision_prompt(request.messages))
            text = _dumps(value)
        elif task == TASK_ANALYZE:
            value = analyze_prompt(parse_task_prompt(request.messages))
            text = value["report"]
        elif task == TASK_SUMMARIZE:
            text = summarize_prompt(parse_task_prompt(request.messages))
        elif task == TASK_PROPOSE_EDIT:
            value = propose_edit_answer(parse_propose_edit_prompt(request.messages))
            text = _dumps(value)
        else:
            text = answer_generic(request.messages)
        if request.json_schema is not None:
            if value is None:
                value = instance_for_schema(request.json_schema, text)
            text = _dumps(value)
        usage = Usage(
            input_tokens=estimate_message_tokens(request.messages),
            output_tokens=estimate_tokens(text),
            estimated=False,  # the offline model counts by this rule; there is no other count
        )
        raw = {
            "id": f"offline-{_request_digest(request, model)[:24]}",
            "object": "offline.completion",
            "model": model,
            "task": task,
            "json": request.json_schema is not None,
            "output_chars": len(text),
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }
        return CompletionResponse(
            text=text,
            json_value=value,
            usage=usage,
            provider=self.name,
            model=model,
            raw=raw,
            latency_ms=0.0,  # a measured latency would make equal requests differ
        )


def instance_for_schema(schema: dict[str, Any], text: str) -> Any:
    """A value valid for a (simple) JSON schema, carrying ``text`` in its text-like fields."""
    return _instance(schema, text, schema, depth=0)


def _instance(schema: Any, text: str, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > 20:
        return text
    if isinstance(schema.get("$ref"), str):
        return _instance(_resolve(schema["$ref"], root), text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    choices = [schema[k] for k in ("anyOf", "oneOf", "allOf") if isinstance(schema.get(k), list)]
    if choices and choices[0]:
        return _instance(choices[0][0], text, root, depth + 1)
    return _typed_instance(schema, text, root, depth)


def _typed_instance(schema: dict[str, Any], text: str, root: dict[str, Any], depth: int) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return _object_instance(schema, text, root, depth)
    if kind == "array":
        count = int(schema.get("minItems", 0))
        return [_instance(schema.get("items", {}), text, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    limit = schema.get("maxLength")
    return text[:limit] if isinstance(limit, int) else text


def _object_instance(schema: dict[str, Any], text: str, root: dict[str, Any], depth: int) -> Any:
    properties: dict[str, Any] = schema.get("properties", {})
    required = schema.get("required", list(properties))
    names = [name for name in properties if name in required or name == "source"]
    text_field = next((n for n in names if n in _TEXT_FIELDS), None)
    if text_field is None:
        text_field = next((n for n in names if properties[n].get("type") == "string"), None)
    result: dict[str, Any] = {}
    for name in names:
        if name == "source" and properties[name].get("type", "string") == "string":
            result[name] = "offline"
        else:
            given = text if name == text_field else ""
            result[name] = _instance(properties[name], given, root, depth + 1)
    return result


def _resolve(reference: str, root: dict[str, Any]) -> Any:
    node: Any = root
    for part in reference.removeprefix("#/").split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, indent=2)


def _request_digest(request: CompletionRequest, model: str) -> str:
    body = {"model": model, "request": request.model_dump(mode="json")}
    encoded = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()
