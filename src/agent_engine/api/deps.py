"""Request-scoped dependencies: the engine context, and who is acting with which role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent_engine.access_errors import ForbiddenError, UnauthenticatedError
from agent_engine.config import host_is_loopback
from agent_engine.domain.principals import Principal, Role, unauthenticated_principal
from agent_engine.engine.context import EngineContext
from agent_engine.engine.key_limits import RateLimiter, RunAdmission
from agent_engine.engine.keys import ApiKeys, split_token
from agent_engine.errors import InputValidationError

MAX_ACTOR_CHARS = 200


@dataclass(frozen=True)
class Guard:
    """Who may call this app: whether keys are required, the key service and the per-key
    limits (built at start-up, one per process)."""

    enforced: bool
    keys: ApiKeys
    admission: RunAdmission
    limiter: RateLimiter | None = None


# The dependencies below do no I/O, yet are ``async def``: FastAPI runs a plain ``def``
# dependency in a worker thread, a thread hop per request for an attribute read.


async def get_engine(request: Request) -> EngineContext:
    """The process's engine context, built at start-up."""
    ctx: EngineContext = request.app.state.engine
    return ctx


def get_guard(request: Request) -> Guard:
    """The process's keys and limits, built at start-up."""
    guard: Guard = request.app.state.guard
    return guard


async def _current_guard(request: Request) -> Guard:
    return get_guard(request)


def _actor_header(x_actor: str | None) -> str | None:
    if x_actor is None:
        return None
    actor = x_actor.strip()
    if not actor or len(actor) > MAX_ACTOR_CHARS or not actor.isprintable():
        raise InputValidationError(
            f"X-Actor must be 1–{MAX_ACTOR_CHARS} printable characters",
            errors=[{"field": "X-Actor", "message": "invalid actor"}],
        )
    return actor


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key made by `agent-engine keys create` (`Authorization: Bearer ae_…`).",
)


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_actor: Annotated[str | None, Header()] = None,
) -> Principal:
    """The caller: the key it presents (required when auth is on; checked whenever given),
    else, with auth off, whoever ``X-Actor`` names, as admin. Its rate is spent here.

    With auth off, a bearer token that is not shaped like one of our keys is no key at all:
    OpenAI clients refuse to start without some key and send whatever they were given."""
    guard = get_guard(request)
    if credentials is not None and (
        guard.enforced or split_token(credentials.credentials) is not None
    ):
        principal = await guard.keys.authenticate(credentials.credentials)
        if principal is None:
            raise UnauthenticatedError("the API key is unknown or revoked")
    elif guard.enforced:
        raise UnauthenticatedError(
            "an API key is required: send `Authorization: Bearer <key>` "
            "(make one with `agent-engine keys create`)"
        )
    else:
        # Auth off means "only this machine can reach us": a client from elsewhere (an ASGI
        # server started on a public address without `serve`) is refused, not believed.
        client = request.client
        if client is not None and not host_is_loopback(client.host):
            raise UnauthenticatedError(
                "authentication is off, so only loopback clients are answered; "
                "set AGENT_ENGINE_AUTH_REQUIRED=true and use API keys"
            )
        principal = unauthenticated_principal(_actor_header(x_actor))
    if guard.limiter is not None:
        guard.limiter.take(principal.name)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


class RoleCheck:
    """The dependency that refuses callers weaker than ``role`` (403; 401 without a key)."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, principal: CurrentPrincipal) -> Principal:
        if not principal.has(self.role):
            raise ForbiddenError(
                f"{principal.name!r} holds role '{principal.role.value}'; this needs "
                f"'{self.role.value}' or above",
                required_role=self.role.value,
                role=principal.role.value,
            )
        return principal


async def get_actor(principal: CurrentPrincipal) -> str:
    """Who is acting, as the audit log records it: the key's name (auth on) or ``X-Actor``."""
    return principal.name


Engine = Annotated[EngineContext, Depends(get_engine)]
Actor = Annotated[str, Depends(get_actor)]
Gate = Annotated[Guard, Depends(_current_guard)]
