"""The engine's refusals as typed exceptions: one class per stable error family, built from the
server's ``application/problem+json`` body; a server that cannot be reached is
:class:`EngineUnreachable`."""

from __future__ import annotations

from typing import Any


class EngineClientError(Exception):
    """Root of everything the client raises on purpose."""


class EngineUnreachable(EngineClientError):
    """No answer from the server: refused, timed out, or the connection broke."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach the server at {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason


class EngineAPIError(EngineClientError):
    """The server answered with an error; ``code`` is its stable code, ``extra`` the problem's
    other fields (``current_state``, ``errors``, ``limit``, …)."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        detail: str,
        title: str | None = None,
        type: str | None = None,
        instance: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{detail} ({code})")
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.type = type
        self.instance = instance
        self.extra: dict[str, Any] = extra or {}

    def __getattr__(self, name: str) -> Any:
        # The problem's own fields read as attributes: ``error.current_state``.
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)


class BadRequest(EngineAPIError):
    """400: the request cannot be honoured as given."""


class Unauthorized(EngineAPIError):
    """401: no API key, or one the server does not know or has revoked."""


class Forbidden(EngineAPIError):
    """403: the key's role may not do this, or the policy may only be tightened."""


class FourEyes(Forbidden):
    """403 ``four_eyes``: the run's creator may not approve it."""


class NotFound(EngineAPIError):
    """404: no such run, step, plan version or budget."""


class Conflict(EngineAPIError):
    """409: the run or step is not in a state for this (or the resource exists already)."""


class InvalidTransition(Conflict):
    """409 ``invalid_transition``: ``current_state`` cannot move to ``attempted_state``."""


class RunFinished(Conflict):
    """409 ``run_finished``: a completed or cancelled run takes no more changes."""


class PayloadTooLarge(EngineAPIError):
    """413: the request body is over the server's limit."""


class Unprocessable(EngineAPIError):
    """422: well-formed but refused (a limit, a workspace outside the roots, …)."""


class ValidationFailed(Unprocessable):
    """422 ``validation_error`` or ``invalid_plan``: ``errors`` lists the fields and why."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Each refused field with its message."""
        found = self.extra.get("errors")
        return list(found) if isinstance(found, list) else []


class BudgetBelowSpent(Unprocessable):
    """422 ``budget_below_spent``: a budget below what is already spent."""


class AuditInvalid(Unprocessable):
    """422 ``audit_invalid``: a bundle whose chain does not verify."""


class RateLimited(EngineAPIError):
    """429: too many requests (or runs in flight); ``retry_after`` is seconds to wait, if
    the server said."""

    def __init__(self, *, retry_after: float | None = None, **fields: Any) -> None:
        super().__init__(**fields)
        self.retry_after = retry_after


class TooManyRuns(RateLimited):
    """429 ``too_many_runs``: the key has its maximum of runs in flight."""


class ServerError(EngineAPIError):
    """5xx: the server failed (the error was logged there)."""


class ServiceUnavailable(ServerError):
    """503: the server's database could not be reached; retry shortly."""


_BY_CODE: dict[str, type[EngineAPIError]] = {
    "four_eyes": FourEyes,
    "invalid_transition": InvalidTransition,
    "run_finished": RunFinished,
    "validation_error": ValidationFailed,
    "invalid_plan": ValidationFailed,
    "budget_below_spent": BudgetBelowSpent,
    "audit_invalid": AuditInvalid,
    "too_many_runs": TooManyRuns,
}
_BY_STATUS: dict[int, type[EngineAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
    503: ServiceUnavailable,
}
_KNOWN_FIELDS = frozenset({"type", "title", "status", "detail", "code", "instance"})


def error_from_problem(
    status: int, body: Any, retry_after_header: str | None = None
) -> EngineAPIError:
    """The exception for an error answer: by its stable ``code``, else by its HTTP status."""
    problem = body if isinstance(body, dict) else {}
    code = str(problem.get("code") or f"http_{status}")
    detail = str(problem.get("detail") or f"the server answered HTTP {status}")
    family = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if family is None:
        family = ServerError if status >= 500 else EngineAPIError
    fields: dict[str, Any] = {
        "status": status,
        "code": code,
        "detail": detail,
        "title": problem.get("title"),
        "type": problem.get("type"),
        "instance": problem.get("instance"),
        "extra": {k: v for k, v in problem.items() if k not in _KNOWN_FIELDS},
    }
    if issubclass(family, RateLimited):
        return family(retry_after=_retry_after(retry_after_header, problem), **fields)
    return family(**fields)


def _retry_after(header: str | None, problem: dict[str, Any]) -> float | None:
    for value in (header, problem.get("retry_after_s")):
        if value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None
