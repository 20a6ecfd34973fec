"""The provider keys the server holds are masked out of a step's recorded result, whatever
variable of the model catalog holds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_engine.engine.secrets import held_secrets, redact_result, secret_env_vars
from agent_engine.engine.stepping import StepResult
from agent_engine.errors import CommandTimedOutError

CATALOG = """
providers:
  inhouse: {kind: openai, base_url: "http://127.0.0.1:9", api_key_env: INHOUSE_LLM_TOKEN}
models:
  - {provider: offline, model: offline-1, tier: small, context_window: 1000, max_output_tokens: 100}
"""


def test_every_api_key_env_of_the_catalog_is_a_secret(tmp_path: Path) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    names = secret_env_vars(catalog)
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "INHOUSE_LLM_TOKEN"} <= set(names)


def test_output_error_and_log_lines_are_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    monkeypatch.setenv("INHOUSE_LLM_TOKEN", "tok-inhouse-0123456789")
    secrets = held_secrets(catalog)
    error = CommandTimedOutError(
        "printed tok-inhouse-0123456789", output={"stdout": "tok-inhouse-0123456789\n"}
    )
    result = StepResult(
        output={"stdout": "key=tok-inhouse-0123456789"},
        error=error,
        calls=[],
        latency_ms=1.0,
        logs=({"level": "info", "message": "saw tok-inhouse-0123456789"},),
    )
    masked = redact_result(result, secrets)
    assert masked.output == {"stdout": "key=[REDACTED]"}
    assert masked.error is not None
    assert masked.error.detail == "printed [REDACTED]"
    assert masked.error.data == {"output": {"stdout": "[REDACTED]\n"}}
    assert masked.logs == ({"level": "info", "message": "saw [REDACTED]"},)
