"""The app with authentication on, and API keys made through the app's own key service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from agent_engine.api.app import create_app
from agent_engine.api.deps import Guard
from agent_engine.config import Settings
from agent_engine.domain.principals import Role


@dataclass
class AuthedApp:
    app: FastAPI
    http: httpx.AsyncClient

    @property
    def guard(self) -> Guard:
        guard: Guard = self.app.state.guard
        return guard

    async def key(self, name: str, role: Role, *, may_auto_approve: bool = False) -> str:
        """A new key's token (made as the CLI makes them)."""
        made = await self.guard.keys.create(
            name=name, role=role, may_auto_approve=may_auto_approve, created_by="test"
        )
        return made.token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def authed_app(settings: Settings, **overrides: Any) -> AsyncIterator[AuthedApp]:
    """The real app on ``settings`` with ``auth_required`` (and ``overrides``), lifespan run."""
    app = create_app(settings.model_copy(update={"auth_required": True, **overrides}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield AuthedApp(app, http)
