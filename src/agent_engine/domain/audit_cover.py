"""What audit events say about the rows an auditor must trust, beside the events themselves.

An event's hash covers its payload; these are the payload pieces that name other rows by their
content hashes (an LLM call, an approval, a step's input and output), so that a verifier
(``domain/audit_verify.py``) recomputes each hash from the row and tells a changed row.
"""

from __future__ import annotations

from typing import Any

from agent_engine.domain.canonical import content_hash


def call_coverage(row: dict[str, Any]) -> dict[str, Any]:
    """How an event names one ``llm_calls`` row: its id, the request hash the router made, the
    hash of the request body recorded, the response's hash and the cost."""
    cost = row.get("cost_usd")
    return {
        "id": str(row["id"]),
        "request_hash": row["request_hash"],
        "request_body_hash": content_hash(row["request"]),
        "response_hash": row.get("response_hash"),
        "cost_usd": None if cost is None else format(cost, "f"),
    }


def approval_receipt(row: dict[str, Any]) -> dict[str, Any]:
    """How an event names one ``approvals`` row: who decided what, on which attempt, bound to
    which input, having been shown what (by hash)."""
    return {
        "id": str(row["id"]),
        "decision": row["decision"],
        "actor": row["actor"],
        "attempt": row["attempt"],
        "input_hash": row.get("input_hash"),
        "shown_hash": row.get("shown_hash"),
    }


def resolved_input_hash(resolved_input: dict[str, Any] | None) -> str | None:
    """The hash an approval binds to: the step's exact resolved input (None: not resolved)."""
    return None if resolved_input is None else content_hash(resolved_input)
