"""The engine's error hierarchy.

Every error the engine raises on purpose is an :class:`EngineError` carrying a stable ``code``
and an HTTP status; the API renders them as ``application/problem+json``. Three families are
kept apart: caller mistakes (:class:`CallerError`), runtime failures (:class:`RuntimeFailure`)
and control-flow signals (:class:`ControlSignal`). The caller mistakes about who may do what
(authentication, roles, limits, policies) live in ``access_errors.py``. This module imports
nothing of ours, so every layer may use it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class EngineError(Exception):
    """Root of every deliberate engine error."""

    code: ClassVar[str] = "engine_error"
    http_status: ClassVar[int] = 500
    title: ClassVar[str] = "Engine error"

    def __init__(self, detail: str, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 body for this error (without ``instance``)."""
        body: dict[str, Any] = {
            "type": f"https://agent-engine.dev/problems/{self.code.replace('_', '-')}",
            "title": self.title,
            "status": self.http_status,
            "detail": self.detail,
            "code": self.code,
        }
        body.update({k: v for k, v in self.data.items() if v is not None})
        return body

    def headers(self) -> dict[str, str]:
        """HTTP headers the response must carry (``WWW-Authenticate``, ``Retry-After``)."""
        return {}


# --- caller mistakes -------------------------------------------------------------------------


class CallerError(EngineError):
    """The request cannot be honoured as given; retrying it unchanged will fail again."""

    code = "bad_request"
    http_status = 400
    title = "Bad request"


class NotFoundError(CallerError):
    code = "not_found"
    http_status = 404
    title = "Not found"


class MetricsDisabledError(NotFoundError):
    """``/metrics`` while ``AGENT_ENGINE_METRICS_ENABLED`` is false."""

    code = "metrics_disabled"
    title = "Metrics disabled"


class InvalidTransitionError(CallerError):
    """A state change the transition table forbids."""

    code = "invalid_transition"
    http_status = 409
    title = "Invalid state transition"

    def __init__(
        self, entity: str, current: str, attempted: str, detail: str | None = None
    ) -> None:
        super().__init__(
            detail or f"{entity} is '{current}' and cannot move to '{attempted}'",
            entity=entity,
            current_state=current,
            attempted_state=attempted,
        )


class ConflictError(CallerError):
    code = "conflict"
    http_status = 409
    title = "Conflict"


class IdempotencyConflictError(ConflictError):
    code = "idempotency_key_reused"
    title = "Idempotency key reused with a different request"


class ForkNotReadyError(ConflictError):
    """A fork from step N needs steps 1..N-1 of the original finished (completed or skipped)."""

    code = "fork_not_ready"


class NotDerivedError(ConflictError):
    """A divergence report needs a run that is a replay or a fork of another run."""

    code = "not_a_replay_or_fork"


class PayloadsPrunedError(ConflictError):
    """Retention replaced the run's recorded payloads by their hashes: nothing to replay or
    fork from (docs/operations-logs.md)."""

    code = "payloads_pruned"


class RunFinishedError(ConflictError):
    """A change a finished (completed or cancelled) run cannot take any more."""

    code = "run_finished"


class BudgetBelowSpentError(CallerError):
    """A budget set below what its run, project or key has already spent."""

    code = "budget_below_spent"
    http_status = 422
    title = "Budget below what is spent"


class PlanValidationError(CallerError):
    """A plan (explicit or generated) names an unknown step type or input its executor refuses."""

    code = "invalid_plan"
    http_status = 422
    title = "Invalid plan"


class InputValidationError(CallerError):
    code = "validation_error"
    http_status = 422
    title = "Request validation failed"


class PayloadTooLargeError(CallerError):
    code = "payload_too_large"
    http_status = 413
    title = "Payload too large"


# --- runtime failures ------------------------------------------------------------------------


class RuntimeFailure(EngineError):
    """Something failed while doing the work; the request itself was sound."""

    code = "runtime_failure"
    http_status = 500
    title = "Runtime failure"
    retryable: ClassVar[bool] = False


class WorkspaceViolationError(RuntimeFailure):
    """A path or file that would leave, or is not allowed in, the run's workspace."""

    code = "workspace_violation"
    http_status = 422
    title = "Workspace violation"


class ExecutorError(RuntimeFailure):
    """An executor could not do its step (bad file, failed precondition, …)."""

    code = "executor_error"
    http_status = 422
    title = "Step execution failed"


class DocumentTooDeepError(ExecutorError):
    """A step's resolved input or output nests deeper than the server records: the step fails
    instead of storing a document that later reads could not serialize."""

    code = "document_too_deep"
    title = "Step document nested too deep"


class InvalidEditError(ExecutorError):
    """A model never proposed an edit that validates: ``attempts`` lists each answer's errors."""

    code = "invalid_edit"
    title = "The model proposed no valid edit"


class StaleEditError(ExecutorError):
    """The file changed since the edit was made against it: ``expected_sha256`` is what the edit
    was made on, ``actual_sha256`` what the file is now (None, and ``file_exists`` false, when
    it does not exist)."""

    code = "stale_edit"
    title = "The file changed since the edit was made"


class CommandTimedOutError(ExecutorError):
    """A command ran past its timeout and was killed; its output so far is in the data."""

    code = "command_timed_out"


class SandboxUnavailableError(ExecutorError):
    """Commands cannot run in their sandbox here (bubblewrap missing, namespaces refused, or a
    process limit that could not hold); the message names the fix."""

    code = "sandbox_unavailable"


class TransientExecutorError(ExecutorError):
    """A step failure another attempt may not repeat (a flaky dependency); retried by policy."""

    code = "transient_error"
    retryable = True


class McpUnavailableError(ExecutorError):
    """An MCP server could not be started, reached or completed the handshake; retried by the
    step's policy (the server may be back on the next attempt)."""

    code = "mcp_unavailable"
    retryable = True


class McpTimeoutError(ExecutorError):
    """An MCP tool call (server start and handshake included) ran past its timeout."""

    code = "mcp_timeout"
    retryable = True


class McpToolError(ExecutorError):
    """An MCP tool answered with an error (``isError``) or the server refused the call."""

    code = "mcp_error"
    retryable = True


class McpNotConfiguredError(ExecutorError):
    """A step names an MCP server the servers file does not have (any more)."""

    code = "mcp_not_configured"


class ProviderError(RuntimeFailure):
    """An LLM provider failed; ``retryable`` says whether another attempt may succeed."""

    code = "provider_error"
    http_status = 502
    title = "LLM provider error"

    def __init__(self, detail: str, *, retryable: bool = False, **data: Any) -> None:
        super().__init__(detail, **data)
        self.retryable_instance = retryable

    @property
    def is_retryable(self) -> bool:
        return self.retryable_instance


class ReplayMissError(RuntimeFailure):
    """A replayed run asked a model something its original never asked: ``differences`` lists
    the request fields that differ from the nearest recorded request (path, expected, actual)."""

    code = "replay_miss"
    http_status = 409
    title = "No recorded model call matches"


class ReplayDivergedError(RuntimeFailure):
    """A replayed run reached a step its original did not have (or had of another type)."""

    code = "replay_diverged"
    http_status = 409
    title = "The replay left the original run's path"


class StaleFenceError(RuntimeFailure):
    """A worker wrote about a step with a fence older than the step's current one."""

    code = "stale_fence"
    http_status = 409
    title = "Stale lease"


# --- control-flow signals --------------------------------------------------------------------


class ControlSignal(EngineError):
    """Not a failure: the engine must stop and wait, or stop for good."""

    code = "control_signal"
    http_status = 409
    title = "Stopped"


class BudgetExceededError(ControlSignal):
    code = "budget_exceeded"
    http_status = 409
    title = "Budget exceeded"


class CancelledError(ControlSignal):
    code = "cancelled"
    http_status = 409
    title = "Cancelled"


class PolicyFileError(EngineError):
    """The operator's policies file cannot be used; raised at start-up, naming file and field."""

    code = "invalid_policies_file"
    http_status = 500
    title = "Invalid policies file"


class McpServersFileError(EngineError):
    """The operator's MCP servers file cannot be used; raised at start-up, naming file and field."""

    code = "invalid_mcp_servers_file"
    http_status = 500
    title = "Invalid MCP servers file"


class AuditKeyFileError(EngineError):
    """An audit signing or verify key file cannot be used; raised at start-up, naming the file."""

    code = "invalid_audit_key_file"
    http_status = 500
    title = "Invalid audit key file"


class AuditVerificationError(CallerError):
    """A bundle whose audit chain does not verify (import refuses it), naming the first break."""

    code = "audit_invalid"
    http_status = 422
    title = "Audit chain does not verify"
