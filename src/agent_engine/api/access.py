"""Each route declares the least role it needs, once: the same declaration enforces it and
records it in the OpenAPI spec as ``x-required-role`` (which the role-matrix test reads)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from agent_engine.api.deps import RoleCheck
from agent_engine.domain.principals import Role

ROLE_FIELD = "x-required-role"
PUBLIC = "public"

_PROBLEM: dict[str, Any] = {"application/problem+json": {}}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown or revoked one", "content": _PROBLEM},
    403: {"description": "The key's role is too weak", "content": _PROBLEM},
    429: {"description": "The key's rate limit is spent (see Retry-After)", "content": _PROBLEM},
}


def requires(
    role: Role, *, responses: dict[int | str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Route keyword arguments: refuse callers below ``role``, and say so in the spec (pass a
    route's other documented ``responses`` here: the keyword cannot be given twice)."""
    return {
        "dependencies": [Depends(RoleCheck(role))],
        "openapi_extra": {ROLE_FIELD: role.value},
        "responses": {**copy.deepcopy(_REFUSALS), **(responses or {})},
    }


def public() -> dict[str, Any]:
    """Route keyword arguments for a route anyone may call (liveness, readiness)."""
    return {"openapi_extra": {ROLE_FIELD: PUBLIC}}


def _declared(route: APIRoute) -> str | None:
    role = (route.openapi_extra or {}).get(ROLE_FIELD)
    if role == PUBLIC:
        return PUBLIC
    checks = [d.dependency for d in route.dependencies if isinstance(d.dependency, RoleCheck)]
    if len(checks) != 1 or checks[0].role.value != role:
        return None  # a recorded role that is not the one enforced counts as none
    return str(role)


def check_declared_roles(app: FastAPI, *, unlisted_public: frozenset[str]) -> None:
    """Refuse to build an app with a route that does not declare its role: a route added
    without one would otherwise be open to everyone. ``unlisted_public``: the paths of routes
    kept out of the spec that anyone may call (the documentation pages)."""
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        if not route.include_in_schema and route.path in unlisted_public:
            continue
        if _declared(route) is None:
            methods = ",".join(sorted(route.methods or ()))
            raise RuntimeError(
                f"route {methods} {route.path} declares no role: add **requires(Role.…) "
                "or **public() to its decorator"
            )
