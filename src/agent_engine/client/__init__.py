"""The engine's typed Python client (the SDK): :class:`EngineClient` for synchronous code and
:class:`AsyncEngineClient` for asyncio, over the HTTP API, answering with the API's own models
and raising one exception class per error family (docs/sdk.md)."""

from __future__ import annotations

from agent_engine.client._calls import DEFAULT_URL, UNSET
from agent_engine.client.asynchronous import AsyncEngineClient
from agent_engine.client.errors import (
    AuditInvalid,
    BadRequest,
    BudgetBelowSpent,
    Conflict,
    EngineAPIError,
    EngineClientError,
    EngineUnreachable,
    Forbidden,
    FourEyes,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RunFinished,
    ServerError,
    ServiceUnavailable,
    TooManyRuns,
    Unauthorized,
    Unprocessable,
    ValidationFailed,
)
from agent_engine.client.models import (
    AuditEventOut,
    AuditOut,
    ExecuteOut,
    Health,
    PlanOut,
    RunBudget,
    RunEvent,
    RunOut,
    RunPage,
    RunWithSteps,
    StepOut,
)
from agent_engine.client.sync import EngineClient

__all__ = [
    "DEFAULT_URL",
    "UNSET",
    "AsyncEngineClient",
    "AuditEventOut",
    "AuditInvalid",
    "AuditOut",
    "BadRequest",
    "BudgetBelowSpent",
    "Conflict",
    "EngineAPIError",
    "EngineClient",
    "EngineClientError",
    "EngineUnreachable",
    "ExecuteOut",
    "Forbidden",
    "FourEyes",
    "Health",
    "InvalidTransition",
    "NotFound",
    "PayloadTooLarge",
    "PlanOut",
    "RateLimited",
    "RunBudget",
    "RunEvent",
    "RunFinished",
    "RunOut",
    "RunPage",
    "RunWithSteps",
    "ServerError",
    "ServiceUnavailable",
    "StepOut",
    "TooManyRuns",
    "Unauthorized",
    "Unprocessable",
    "ValidationFailed",
]
