"""Structured logs for `serve`, `worker` and `router serve`: every stdlib log record goes
through structlog's ProcessorFormatter, comes out as one JSON object a line (production) or a
readable line (a terminal), carries the run and step it was logged for, and never holds a
provider key the process has in its environment (docs/operations-logs.md)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from agent_engine.config import Settings

LogFormat = Literal["json", "console"]
# Fields every line logged for a step has, present even when empty (None): a query for
# `trace_id` finds the field on every step line, set or not.
STEP_FIELDS = ("run_id", "step_id", "attempt", "trace_id")
_HANDLER_NAME = "agent_engine.structured"
# Loggers at the configured level (the rest at warnings): ours, and uvicorn's when `serve` hands
# its logging to us (``uvicorn.run(..., log_config=None)``).
ENGINE_LOGGERS = ("agent_engine", "uvicorn")


def chosen_format(settings: Settings, stream: IO[str]) -> LogFormat:
    """The setting when given, else readable lines on a terminal and JSON lines elsewhere."""
    if settings.log_format is not None:
        return settings.log_format
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def step_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """On a line bound to a run, every step field, None where it has no value (yet)."""
    if "run_id" in event_dict:
        for name in STEP_FIELDS:
            event_dict.setdefault(name, None)
    return event_dict


def secret_masker(secrets: Callable[[], list[str]]) -> Processor:
    """A processor masking every value of ``secrets()`` (read at each line: a key may be set
    after start-up) and every bearer token, in each field, exception text included."""
    from agent_engine.llm.redaction import redact

    def mask(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        found = secrets()
        return {key: _masked(value, found, redact) for key, value in event_dict.items()}

    return mask


def _masked(value: Any, secrets: list[str], redact: Callable[[Any, list[str]], Any]) -> Any:
    if isinstance(value, str | Mapping | list | tuple):
        return redact(value, secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value), secrets)  # rendered as text anyway: mask what it says


def shared_processors() -> list[Processor]:
    """What every line gets, from a stdlib logger or a structlog one: the bound context (run,
    step, attempt), level, logger name, UTC time and the step fields."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        step_fields,
    ]


def formatter(log_format: LogFormat, secrets: Callable[[], list[str]]) -> logging.Formatter:
    """The ProcessorFormatter rendering stdlib records (and structlog's own) in ``log_format``."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before masking, so a key in an exception is masked too.
            structlog.processors.format_exc_info,
            secret_masker(secrets),
            renderer,
        ],
    )


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Route every stdlib log record (the root logger's handler) to ``stream`` (stderr) as
    structured lines: the engine's and uvicorn's at the configured level, libraries' from
    warnings up; calling it again replaces the handler it installed."""
    from agent_engine.engine.secrets import held_secrets

    target = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(target)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        formatter(chosen_format(settings, target), lambda: held_secrets(settings.models_file))
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries speak at warnings and above; the engine and uvicorn (its access and error
    # lines) at the configured level. uvicorn's "trace" is finer than any logging level.
    root.setLevel(logging.WARNING)
    level = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
    for name in ENGINE_LOGGERS:
        logging.getLogger(name).setLevel(level)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return handler
