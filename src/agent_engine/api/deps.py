"""Request-scoped dependencies: the engine context and who is acting."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from agent_engine.engine.context import EngineContext
from agent_engine.errors import InputValidationError

MAX_ACTOR_CHARS = 200


def get_engine(request: Request) -> EngineContext:
    ctx: EngineContext = request.app.state.engine
    return ctx


def get_actor(x_actor: Annotated[str | None, Header()] = None) -> str:
    """Who is acting, from ``X-Actor`` (recorded in the audit log); ``anonymous`` if absent."""
    if x_actor is None:
        return "anonymous"
    actor = x_actor.strip()
    if not actor or len(actor) > MAX_ACTOR_CHARS or not actor.isprintable():
        raise InputValidationError(
            f"X-Actor must be 1–{MAX_ACTOR_CHARS} printable characters",
            errors=[{"field": "X-Actor", "message": "invalid actor"}],
        )
    return actor


Engine = Annotated[EngineContext, Depends(get_engine)]
Actor = Annotated[str, Depends(get_actor)]
