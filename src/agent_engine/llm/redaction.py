"""Remove provider secrets from anything that may be logged, stored or returned."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import orjson

SECRET_ENV_VARS: tuple[str, ...] = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
SENSITIVE_KEYS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "api_key", "apikey"}
)
MASK = "[REDACTED]"
# Values shorter than this are not treated as secrets: masking "ab" everywhere would mangle text.
_MIN_SECRET_LENGTH = 6
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")


def current_secrets(extra_env_vars: tuple[str, ...] = ()) -> list[str]:
    """The secret values currently set in the environment, longest first."""
    values = {os.environ.get(name, "") for name in (*SECRET_ENV_VARS, *extra_env_vars)}
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """Mask every known secret value and every bearer token in ``text``."""
    for secret in current_secrets() if secrets is None else secrets:
        text = text.replace(secret, MASK)
    return _BEARER.sub(f"Bearer {MASK}", text)


def _may_hold_secrets(obj: Any, secrets: list[str]) -> bool:
    """Whether anything in ``obj`` could need masking, judged on its JSON text at once (a tree
    walk per model call cost more than the call's own bookkeeping)."""
    try:
        text = orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return True  # not JSON-like: look at every part
    if any(secret in text for secret in secrets):
        return True
    lowered = text.lower()
    return "bearer" in lowered or any(f'"{key}"' in lowered for key in SENSITIVE_KEYS)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """``obj`` (a str/dict/list tree) with secret headers and key values masked: a copy when
    something is masked, ``obj`` itself when nothing needs to be."""
    found = current_secrets() if secrets is None else secrets
    if isinstance(obj, Mapping | list | tuple) and not _may_hold_secrets(obj, found):
        return obj
    return _redact(obj, found)


def _redact(obj: Any, found: list[str]) -> Any:
    if isinstance(obj, str):
        return redact_text(obj, found)
    if isinstance(obj, Mapping):
        return {
            key: MASK
            if isinstance(key, str) and key.lower() in SENSITIVE_KEYS
            else _redact(value, found)
            for key, value in obj.items()
        }
    if isinstance(obj, list | tuple):
        return type(obj)(_redact(item, found) for item in obj)
    return obj
