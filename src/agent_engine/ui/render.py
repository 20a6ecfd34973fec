"""Rendering the console's pages: the Jinja2 environment and its filters, and the route class
that shows an engine error as a page (not problem+json) and sends a logged-out browser to the
login form."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from agent_engine.access_errors import UnauthenticatedError
from agent_engine.api.deps import get_guard
from agent_engine.errors import EngineError
from agent_engine.ui.session import LoginRequired, csrf_token, remember_csrf

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

MAX_SHOWN_CHARS = 200_000  # a document longer than this is cut on the page (the API has it all)


def money(value: Decimal | float | int | None) -> str:
    """Dollars with the digits that matter: ``$0``, ``$1.50``, ``$0.000123``."""
    if value is None:
        return "—"
    amount = Decimal(value)
    if amount == 0:
        return "$0"
    text = f"{amount:f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def pretty(value: Any) -> str:
    """A JSON document indented for reading (cut when enormous)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)
    if len(text) > MAX_SHOWN_CHARS:
        return text[:MAX_SHOWN_CHARS] + "\n… (cut: the API returns the whole document)"
    return text


def duration(ms: float | None) -> str:
    """Milliseconds as people read them: ``35 ms``, ``1.2 s``, ``3 min 4 s``."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def iso(value: datetime | None) -> str:
    """The instant for ``<time datetime>`` (the browser shows it in the viewer's zone)."""
    return value.isoformat() if value is not None else ""


def utc_text(value: datetime | None) -> str:
    """The instant in UTC, shown until (or without) the script that localises it."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters.update(money=money, pretty=pretty, duration=duration, iso=iso, utc=utc_text)
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render template ``name`` with what every page shows (user, form token, auth state)."""
    guard = get_guard(request)
    full = {
        "principal": getattr(request.state, "principal", None),
        "auth_enforced": guard.enforced,
        "csrf_token": csrf_token(request),
        **context,
    }
    response = templates.TemplateResponse(
        request, name, full, status_code=status_code, headers=headers
    )
    remember_csrf(request, response)
    return response


def error_page(request: Request, status: int, title: str, detail: str, code: str) -> Response:
    """The page shown for a refusal or a failure, with what to do next."""
    return render(
        request,
        "error.html",
        {"status": status, "title": title, "detail": detail, "code": code},
        status_code=status,
    )


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


class PageRoute(APIRoute):
    """A console route: engine errors become pages with their status; a browser without a
    key (auth on) goes to the login form and comes back after."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                return _to_login(request)
            except UnauthenticatedError as exc:
                if get_guard(request).enforced:  # a key revoked or expired since login
                    return _to_login(request)
                return error_page(request, exc.http_status, exc.title, exc.detail, exc.code)
            except EngineError as exc:
                return error_page(request, exc.http_status, exc.title, exc.detail, exc.code)
            except RequestValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                    for e in exc.errors()
                )
                return error_page(request, 422, "Invalid request", detail, "validation_error")

        return page_handler
