"""The provider keys the server holds, masked out of everything a step records: its output,
error, log lines, preview and effect intent. One place, applied by the engine, not per executor."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_engine.errors import EngineError
from agent_engine.executors.command_hashes import rehash_recorded
from agent_engine.llm.catalog import BUILTIN_PROVIDERS, CatalogError, cached_catalog
from agent_engine.llm.redaction import SECRET_ENV_VARS, current_secrets, redact, redact_text

if TYPE_CHECKING:
    from agent_engine.engine.stepping import StepResult


@functools.cache
def secret_env_vars(models_file: Path | None) -> tuple[str, ...]:
    """The variables that hold provider keys: the well-known ones and every ``api_key_env`` of
    the model catalog (read once per catalog file)."""
    names = set(SECRET_ENV_VARS)
    names.update(c.api_key_env for c in BUILTIN_PROVIDERS.values() if c.api_key_env)
    try:
        catalog = cached_catalog(models_file)
    except CatalogError:
        return tuple(sorted(names))
    names.update(c.api_key_env for c in catalog.providers.values() if c.api_key_env)
    return tuple(sorted(names))


def held_secrets(models_file: Path | None) -> list[str]:
    """The values of those variables set in this process now, longest first."""
    return current_secrets(secret_env_vars(models_file))


def redact_value(value: Any, secrets: list[str]) -> Any:
    """``value`` (a JSON-like tree) with every secret masked."""
    return redact(value, secrets) if secrets else value


def redact_error(error: EngineError, secrets: list[str]) -> EngineError:
    """``error`` with its message and data masked (in place: errors are not shared)."""
    error.detail = redact_text(error.detail, secrets)
    error.data = redact(error.data, secrets)
    return error


def redact_result(result: StepResult, secrets: list[str]) -> StepResult:
    """A step's result as it may be recorded: output, error and log lines masked."""
    if not secrets:  # the usual case (offline model, no keys): nothing to look for
        return result
    return replace(
        result,
        output=_masked_output(result.output, secrets) if result.output is not None else None,
        error=redact_error(result.error, secrets) if result.error is not None else None,
        logs=tuple(
            {**line, "message": redact_text(line["message"], secrets)} for line in result.logs
        ),
    )


def _masked_output(output: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    masked: dict[str, Any] = redact(output, secrets)
    # A hash recorded beside the streams must cover the streams as recorded.
    return rehash_recorded(masked) if masked != output else masked
