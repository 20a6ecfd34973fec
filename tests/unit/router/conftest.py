"""Every test here closes the shared provider clients it opened, as a process does at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent_engine.llm.transport import close_provider_clients


@pytest.fixture(autouse=True)
async def _close_provider_clients() -> AsyncIterator[None]:
    yield
    await close_provider_clients()
