"""Errors about who may do what: authentication, roles, four-eyes, per-key and request limits,
and approval policies a client may not loosen. All are caller mistakes (:class:`CallerError`)."""

from __future__ import annotations

from typing import Any

from agent_engine.errors import CallerError, ConflictError

# --- who may do what (authentication, roles, four-eyes, per-key limits) ----------------------


class UnauthenticatedError(CallerError):
    """No API key, or one this server does not know or has revoked."""

    code = "unauthenticated"
    http_status = 401
    title = "Authentication required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(CallerError):
    """The key is valid but its role may not do this."""

    code = "forbidden"
    http_status = 403
    title = "Forbidden"


class FourEyesError(ForbiddenError):
    """The run asks for a second person: its creator (or the plan's) may not approve it."""

    code = "four_eyes"
    title = "Four-eyes rule"


class CsrfRefusedError(ForbiddenError):
    """A console form posted without the page's token, or from another site."""

    code = "csrf_refused"
    title = "Cross-site request refused"


class ApiKeyNameTakenError(ConflictError):
    code = "api_key_name_taken"
    title = "API key name taken"


class RateLimitedError(CallerError):
    """The key sent more requests than its rate allows; ``Retry-After`` says when to retry."""

    code = "rate_limited"
    http_status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: int, **data: object) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, **data)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class TooManyRunsError(CallerError):
    """The key already has as many runs in flight as it may; one must finish first."""

    code = "too_many_runs"
    http_status = 429
    title = "Too many runs in flight"


class LimitExceededError(CallerError):
    """A request over one of the server's configured limits: ``limit`` names the setting and
    ``maximum`` its value, so a client knows what to change (or whom to ask)."""

    code = "limit_exceeded"
    http_status = 422
    title = "Limit exceeded"

    def __init__(self, detail: str, *, limit: str, maximum: int, **data: Any) -> None:
        super().__init__(detail, limit=limit, maximum=maximum, **data)


class JsonTooDeepError(LimitExceededError):
    code = "json_too_deep"
    title = "JSON nested too deep"


class TooManyStepsError(LimitExceededError):
    code = "too_many_steps"
    title = "Plan has too many steps"


class TooManyMetadataKeysError(LimitExceededError):
    code = "too_many_metadata_keys"
    title = "Too many metadata keys"


class StringTooLongError(LimitExceededError):
    code = "string_too_long"
    title = "String too long"


class StepInputTooLargeError(LimitExceededError):
    code = "step_input_too_large"
    title = "Step input too large"


class MaxStepsExceededError(LimitExceededError):
    """An adaptive run's plan (its first or a revision) would give it more steps than its own
    ``max_steps``; ``limit`` is then the run's option, not a server setting."""

    code = "max_steps"
    title = "Over the run's max_steps"


# --- approval policies (who may run what without a person) -----------------------------------


class PolicyLooseningError(CallerError):
    """A run asked to let a step run that the server's policy holds for a person."""

    code = "policy_loosening"
    http_status = 403
    title = "Approval policy may only be tightened"


class UnknownPolicyError(CallerError):
    code = "unknown_policy"
    http_status = 422
    title = "Unknown approval policy"
