"""Logging in to the console with an API key (auth on), and out again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from agent_engine.api.access import public
from agent_engine.api.deps import Gate
from agent_engine.ui.render import PageRoute, render
from agent_engine.ui.session import CSRF_FIELD, KEY_COOKIE, check_csrf, is_https

router = APIRouter(route_class=PageRoute)
KEY_COOKIE_MAX_AGE_S = 12 * 3600


def _local(target: str) -> str:
    """Only a path on this site is followed after login (never another host)."""
    unsafe = any(c.isspace() or not c.isprintable() or c == "\\" for c in target)
    if unsafe or not target.startswith("/") or target.startswith("//"):
        return "/runs"
    return target


@router.get("/login", response_class=HTMLResponse, include_in_schema=False, **public())
async def login_form(
    request: Request, next_page: Annotated[str, Query(alias="next", max_length=2000)] = "/runs"
) -> HTMLResponse:
    """The login form: paste an API key (made with ``agent-engine keys create``)."""
    return render(request, "login.html", {"next": _local(next_page), "error": None})


@router.post("/login", response_model=None, include_in_schema=False, **public())
async def login(
    request: Request,
    guard: Gate,
    token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)],
    api_key: Annotated[str, Form(max_length=500)] = "",
    next_page: Annotated[str, Form(alias="next", max_length=2000)] = "/runs",
) -> Response:
    """Check the key with the key service; keep it in an HttpOnly, SameSite=Strict cookie."""
    check_csrf(request, token)
    target = _local(next_page)
    principal = await guard.keys.authenticate(api_key.strip()) if api_key.strip() else None
    if principal is None:
        context = {"next": target, "error": "That key is unknown or revoked."}
        return render(request, "login.html", context, status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        KEY_COOKIE,
        api_key.strip(),
        max_age=KEY_COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path="/",
    )
    return response


@router.post("/logout", response_model=None, include_in_schema=False, **public())
async def logout(
    request: Request, token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)]
) -> Response:
    """Forget the key this browser holds."""
    check_csrf(request, token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response
