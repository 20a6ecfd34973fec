"""Every error leaves as ``application/problem+json`` (RFC 9457) with a stable ``type``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_engine.errors import EngineError
from agent_engine.router.openai_answers import error_answer
from agent_engine.router.openai_http import CHAT_COMPLETIONS_PATH

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://agent-engine.dev/problems/"
logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def problem_response(
    status: int, code: str, title: str, detail: str, instance: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE)


def _field(loc: tuple[Any, ...]) -> str:
    # Drop the "body"/"query"/"path" prefix: clients name fields, not request parts.
    parts = (
        [str(p) for p in loc[1:]]
        if loc and loc[0] in ("body", "query", "path", "header")
        else [str(p) for p in loc]
    )
    return ".".join(parts) or str(loc[0]) if loc else "request"


async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    body = exc.problem()
    body["instance"] = request.url.path
    if request.url.path == CHAT_COMPLETIONS_PATH:
        # Refusals before the call (no key, weak role, rate limit) also carry OpenAI's error
        # object, which OpenAI clients read their message and code from.
        body["error"] = error_answer(exc)[1]["error"]
    return JSONResponse(
        body, status_code=exc.http_status, media_type=PROBLEM_MEDIA_TYPE, headers=exc.headers()
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = exc.errors()
    broken_json = next((err for err in details if err.get("type") == "json_invalid"), None)
    if broken_json is not None:
        return _invalid_json(request, broken_json, exc.body)
    errors = [
        {
            "field": _field(tuple(err.get("loc", ()))),
            "message": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in details
    ]
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return problem_response(
        422,
        "validation_error",
        "Request validation failed",
        f"invalid request: {fields}",
        request.url.path,
        errors=errors,
    )


def _invalid_json(request: Request, error: dict[str, Any], document: Any) -> JSONResponse:
    """A body that is not JSON, located by line and column (the framework reports a bare
    character offset where a field name would be)."""
    location = error.get("loc", ())
    offset = location[-1] if location and isinstance(location[-1], int) else 0
    text = document if isinstance(document, str) else ""
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)  # rfind gives -1 on the first line
    reason = str(error.get("ctx", {}).get("error") or error.get("msg", "malformed JSON"))
    return problem_response(
        422,
        "validation_error",
        "Request validation failed",
        f"invalid JSON at line {line}, column {column}: {reason}",
        request.url.path,
        errors=[
            {
                "field": "body",
                "line": line,
                "column": column,
                "message": reason,
                "type": "json_invalid",
            }
        ],
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    response = problem_response(exc.status_code, code, title, str(exc.detail), request.url.path)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Errors that point at our own SQL or data are bugs (500); the rest mean the database is
    # unreachable, gone or refusing connections: the request was fine, retry later (503).
    if isinstance(exc, (IntegrityError, DataError, ProgrammingError, NotSupportedError)):
        return await _unexpected(request, exc)
    logger.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    response = problem_response(
        503,
        "database_unavailable",
        "Database unavailable",
        "the database could not be reached; retry shortly",
        request.url.path,
    )
    response.headers["Retry-After"] = "1"
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Never leak internals: the log has the traceback, the client a neutral problem.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        500,
        "internal_error",
        "Internal error",
        "the server failed; the error was logged",
        request.url.path,
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(OSError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
