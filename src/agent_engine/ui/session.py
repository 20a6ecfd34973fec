"""Who is using the console and whether a form really came from it.

With authentication on, the login form stores the API key in an HttpOnly, SameSite=Strict
cookie and every page checks it exactly as the API checks a bearer key (same key service, same
roles, same rate limit). With authentication off (loopback), nobody logs in. Every form that
changes something carries a token equal to a SameSite=Strict cookie (double submit), and a
request whose Origin names another site is refused either way.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from agent_engine.access_errors import CsrfRefusedError, ForbiddenError
from agent_engine.api.access import ROLE_FIELD
from agent_engine.api.deps import RoleCheck, get_guard, get_principal
from agent_engine.domain.principals import Principal, Role

KEY_COOKIE = "agent_engine_key"
CSRF_COOKIE = "agent_engine_csrf"
CSRF_FIELD = "csrf_token"


class LoginRequired(Exception):
    """Authentication is on and the browser holds no key: the page sends it to the login form."""


async def console_principal(request: Request) -> Principal:
    """The console's user: the key in the cookie (auth on), else the loopback user, checked by
    the API's own ``get_principal`` (LoginRequired when auth is on and there is no cookie)."""
    token = request.cookies.get(KEY_COOKIE)
    if token is None and get_guard(request).enforced:
        raise LoginRequired()
    credentials = (
        HTTPAuthorizationCredentials(scheme="Bearer", credentials=token) if token else None
    )
    return await get_principal(request, credentials, None)


class PageRoleCheck(RoleCheck):
    """The role check of a console page: the API's, fed from the cookie instead of a header."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        principal = await console_principal(request)
        if not principal.has(self.role):
            raise ForbiddenError(
                f"{principal.name!r} holds role '{principal.role.value}'; this page needs "
                f"'{self.role.value}' or above",
                required_role=self.role.value,
                role=principal.role.value,
            )
        request.state.principal = principal
        return principal


def page_role(role: Role) -> dict[str, Any]:
    """Route keyword arguments of a console page: its role, enforced from the cookie and
    recorded as the API's routes record theirs (the page stays out of the OpenAPI spec)."""
    return {
        "dependencies": [Depends(PageRoleCheck(role))],
        "openapi_extra": {ROLE_FIELD: role.value},
        "include_in_schema": False,
    }


def csrf_token(request: Request) -> str:
    """The browser's form token (its cookie's value), made on first use; ``remember_csrf``
    must then set it on the response."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if token is None:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return str(token)


def is_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (cookies are then marked Secure)."""
    return request.url.scheme == "https"


def remember_csrf(request: Request, response: Any) -> None:
    """Set the form-token cookie made while rendering this page, if one was."""
    token = getattr(request.state, "new_csrf", None)
    if token is not None:
        response.set_cookie(
            CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=is_https(request),
            path="/",
        )


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        # No Origin nor Referer: only a same-site fetch may go without (old browsers, tools).
        return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse (403 ``csrf_refused``) a form whose token is not the browser's cookie, or that
    comes from another origin."""
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise CsrfRefusedError(
            "this form's token does not match: reload the page and submit it again"
        )
    if not _same_origin(request):
        raise CsrfRefusedError("the form was sent from another site")
