"""A worker's options: its id, how many steps at once, which step types, leases and polling."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from agent_engine.config import Settings


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class WorkerOptions:
    worker_id: str = field(default_factory=default_worker_id)
    concurrency: int = 4
    step_types: frozenset[str] = frozenset()
    lease_s: float = 30.0
    poll_s: float = 2.0
    shutdown_grace_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WorkerOptions:
        """Options from ``AGENT_ENGINE_WORKER_*``; explicit overrides (CLI flags) win."""
        values: dict[str, Any] = {
            "concurrency": settings.worker_concurrency,
            "lease_s": settings.worker_lease_s,
            "poll_s": settings.worker_poll_s,
            "shutdown_grace_s": settings.worker_shutdown_grace_s,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
