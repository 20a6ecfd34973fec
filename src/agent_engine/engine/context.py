"""What every engine service needs, built once per process (API server or worker)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from agent_engine import metrics
from agent_engine.config import Settings
from agent_engine.domain.audit_signing import HeadSigner
from agent_engine.domain.records import ChangeSet
from agent_engine.engine.audit_keys import load_signer
from agent_engine.engine.budget_settles import PendingSettles
from agent_engine.engine.policies import PolicyCatalog, load_policy_catalog
from agent_engine.engine.request_limits import RequestLimits
from agent_engine.executors.base import ExecutionLimits, ExecutorContext
from agent_engine.executors.mcp_config import load_mcp_servers
from agent_engine.executors.mcp_servers import refresh_listings
from agent_engine.executors.registry import ExecutorRegistry, load_registry
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
    WorstCase,
)
from agent_engine.llm.replaying import RecordedRuns
from agent_engine.llm.transport import close_provider_clients
from agent_engine.storage.changes import ChangeWriter
from agent_engine.storage.database import create_engine, create_sessionmaker
from agent_engine.storage.notifications import Notifier

LLMClientFactory = Callable[[Decimal | None], LLMClient]


class HandOff(Protocol):
    """An in-process worker that takes runs created in this process in the very write that
    creates them, without a notification, a claim round or a write of its own."""

    async def claim_new(self, changes: ChangeSet) -> ChangeSet | None:
        """Before a new run is first written: its change set with its ready steps claimed for
        this worker, to be written instead (None: this worker does not take it)."""

    def started(self, taken: ChangeSet, *, written: bool) -> None:
        """After the write: start the claimed steps, or forget them (the run was not written)."""


@dataclass
class EngineContext:
    """Settings, the database, the executor registry and the way to get an LLM client."""

    settings: Settings
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    registry: ExecutorRegistry
    llm_factory: LLMClientFactory
    limits: ExecutionLimits = field(default_factory=ExecutionLimits)
    request_limits: RequestLimits = field(default_factory=RequestLimits)
    policies: PolicyCatalog = field(default_factory=PolicyCatalog)
    notifier: Notifier = field(default_factory=Notifier)
    # Writes every change set (group commit; one round trip per batch on PostgreSQL).
    _changes: ChangeWriter | None = None
    # Set while a worker runs in this process (``serve``'s embedded worker): new runs go to it
    # directly instead of through a notification and a claim round.
    hand_off: HandOff | None = None
    # The recorded calls of runs being replayed in this process (finished runs: they do not change).
    recorded_runs: RecordedRuns = field(default_factory=RecordedRuns)
    # Signs every chain head a write moves (AGENT_ENGINE_AUDIT_SIGNING_KEY_FILE); None: unsigned.
    signer: HeadSigner | None = None
    # Settles of step calls' budget holds still being written (engine/budget_settles.py).
    settles: PendingSettles = field(default_factory=PendingSettles)

    @property
    def changes(self) -> ChangeWriter:
        if self._changes is None:
            # Writes announce their runs in this process at once; on PostgreSQL the trigger
            # announces them to every process too (the notifier drops that echo).
            self._changes = ChangeWriter(
                self.db,
                self.notifier.publish,
                self.signer,
                blob_threshold=self.settings.blob_threshold_bytes,
            )
        return self._changes

    async def start(self) -> None:
        """Start listening for committed events (PostgreSQL: LISTEN across processes), and list
        the MCP servers' tools for the planner's catalog and the plan checks."""
        if self.db.dialect.name == "postgresql":
            await self.notifier.listen_postgres(self.db)
        await refresh_listings(self.limits.mcp_servers)

    async def close(self) -> None:
        await self.settles.wait(timeout_s=SETTLE_GRACE_S)
        await self.notifier.close()
        await close_provider_clients()  # on the loop that made the calls
        if self._changes is not None:
            self._changes.close()
        await self.db.dispose()


def limits_from_settings(settings: Settings) -> ExecutionLimits:
    return ExecutionLimits(
        read_file_max_bytes=settings.read_file_max_bytes,
        list_files_max=settings.list_files_max,
        command_allowlist=tuple(settings.command_allowlist),
        command_env_passthrough=tuple(settings.command_env_passthrough),
        command_timeout_s=settings.command_timeout_s,
        command_output_cap_bytes=settings.command_output_cap_bytes,
        # Resolved once: a root is the operator's, so it is the one path opened by name.
        workspace_roots=tuple(root.resolve() for root in settings.workspace_roots),
        allow_hard_links=settings.allow_hard_links,
        allow_git_writes=settings.allow_git_writes,
        sandbox=settings.sandbox,
        sandbox_read_only_paths=tuple(str(p.absolute()) for p in settings.sandbox_read_only_paths),
        command_network_allowlist=tuple(settings.command_network_allowlist),
        command_max_processes=settings.command_max_processes,
        command_max_memory_bytes=settings.command_max_memory_bytes,
        command_max_cpu_seconds=settings.command_max_cpu_seconds,
        command_max_file_bytes=settings.command_max_file_bytes,
        command_max_write_bytes=settings.command_max_write_bytes,
        propose_edit_max_attempts=settings.propose_edit_max_attempts,
        mcp_servers=load_mcp_servers(
            settings.mcp_servers,
            timeout_s=settings.mcp_timeout_s,
            output_cap_bytes=settings.mcp_output_cap_bytes,
        ),
    )


def _default_llm_factory(settings: Settings) -> LLMClientFactory:
    from agent_engine.router.client import build_llm_client

    def factory(remaining_budget_usd: Decimal | None) -> LLMClient:
        return build_llm_client(settings, remaining_budget_usd=remaining_budget_usd)

    return factory


def build_context(
    settings: Settings,
    *,
    registry: ExecutorRegistry | None = None,
    llm_factory: LLMClientFactory | None = None,
) -> EngineContext:
    """Build the context for ``settings``; tests may pass their own registry or LLM factory.

    A policies file that cannot be used raises PolicyFileError before anything is opened, an
    MCP servers file McpServersFileError.
    """
    policies = load_policy_catalog(settings.policies_file)
    signer = load_signer(settings)
    metrics.set_observing(settings.metrics_enabled)  # one setting per process
    limits = limits_from_settings(settings)
    db = create_engine(settings.database_url)
    notifier = Notifier()
    # Commits are announced in this process at once; PostgreSQL's trigger + NOTIFY also tells
    # the others.
    return EngineContext(
        settings=settings,
        db=db,
        sessions=create_sessionmaker(db, notifier.publish),
        notifier=notifier,
        registry=registry if registry is not None else load_registry(),
        llm_factory=llm_factory if llm_factory is not None else _default_llm_factory(settings),
        limits=limits,
        request_limits=RequestLimits.from_settings(settings),
        policies=policies,
        signer=signer,
    )


def executor_context(
    ctx: EngineContext, run_id: uuid.UUID, step_number: int, workspace: str | None, llm: LLMClient
) -> ExecutorContext:
    """The context one step's executor gets: its workspace, LLM client, logger and limits."""
    # A logger of its own (not registered, so nothing accumulates per step) whose records also
    # reach the process's handlers through "agent_engine.step".
    logger = logging.Logger(f"agent_engine.step.{run_id}.{step_number}", logging.INFO)
    logger.parent = STEP_LOGGER
    return ExecutorContext(
        run_id=str(run_id),
        step_number=step_number,
        workspace_root=Path(workspace) if workspace else None,
        llm=llm,
        logger=logger,
        limits=ctx.limits,
    )


STEP_LOGGER = logging.getLogger("agent_engine.step")
# How long a stopping process waits for the budget settles it started (each is one statement).
SETTLE_GRACE_S = 30.0
MAX_LOG_LINES = 100


class LogCapture(logging.Handler):
    """Keeps a step's log lines (at most ``MAX_LOG_LINES``) so they are recorded with it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, str]] = []
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) >= MAX_LOG_LINES:
            self.dropped += 1
            return
        self.lines.append({"level": record.levelname.lower(), "message": record.getMessage()})


class LazyLLMClient(LLMClient):
    """Builds the real client on first use: most steps never call a model, and the hot path
    should not pay for a router it does not use."""

    def __init__(self, build: Callable[[], LLMClient]) -> None:
        self._build = build
        self._client: LLMClient | None = None

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        if self._client is None:
            self._client = self._build()
        return await self._client.complete(request)

    async def estimate_cost(self, request: CompletionRequest) -> Decimal | None:
        return await self._built().estimate_cost(request)

    async def worst_case(
        self, request: CompletionRequest, room_usd: Decimal | None = None
    ) -> WorstCase | None:
        return await self._built().worst_case(request, room_usd)

    async def complete_within(
        self, request: CompletionRequest, limit_usd: Decimal
    ) -> CompletionResponse:
        return await self._built().complete_within(request, limit_usd)

    def _built(self) -> LLMClient:
        if self._client is None:
            self._client = self._build()
        return self._client

    @property
    def calls(self) -> list[LLMCallRecord]:
        return self._client.calls if self._client is not None else []


def lazy_llm(ctx: EngineContext, remaining_budget_usd: Decimal | None) -> LazyLLMClient:
    """An LLM client for one step, built only if the step calls a model."""
    return LazyLLMClient(lambda: ctx.llm_factory(remaining_budget_usd))
