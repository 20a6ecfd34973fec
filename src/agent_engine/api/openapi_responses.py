"""The error answers the OpenAPI spec documents: every refusal is ``application/problem+json``
(RFC 9457), so each route's spec lists the statuses it can refuse with, in that media type.

``COMMON_PROBLEMS`` holds what any route can answer (the edge's size and depth limits, input
validation, the database being away); a router adds its own (``problem_responses(404, 409)``).
"""

from __future__ import annotations

from typing import Any

# What every problem body holds; routes add fields of their own (errors, limit, run_id, …).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "URI naming the kind of problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable machine-readable code"},
        "instance": {"type": "string", "description": "The request path"},
        "errors": {"type": "array", "items": {"type": "object"}},
        "limit": {"type": "string", "description": "The setting whose limit was exceeded"},
        "maximum": {"type": "integer", "description": "That setting's value"},
    },
    "additionalProperties": True,
}

DESCRIPTIONS = {
    400: "Bad request (e.g. a body that is not UTF-8 text)",
    401: "Authentication required",
    403: "Forbidden for this key's role",
    404: "Not found",
    409: "Conflict with the resource's state",
    413: "Request body too large (AGENT_ENGINE_MAX_BODY_BYTES)",
    422: "Invalid input, or over a request limit (the problem names the setting)",
    429: "Too many requests",
    500: "Internal error (logged; no details leave the server)",
    502: "A model provider failed",
    503: "Database unavailable or not ready; retry",
}

# Statuses any route may answer with: a body that cannot be decoded (400) or is over the body
# limits (413, 422) is refused whatever the route, and every route reads the database.
COMMON_PROBLEMS = (400, 413, 422, 500, 503)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: each status documented as a problem+json body."""
    return {
        status: {
            "description": DESCRIPTIONS.get(status, "Problem"),
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
