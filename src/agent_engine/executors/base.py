"""The executor interface: what a step type declares and what it is given to run."""

from __future__ import annotations

import abc
import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel

from agent_engine.executors.mcp_config import McpServers
from agent_engine.llm.base import LLMClient

InputT = TypeVar("InputT", bound=BaseModel)
OutputT = TypeVar("OutputT", bound=BaseModel)


@dataclass(frozen=True)
class ExecutionLimits:
    """Caps taken from the settings, handed to executors so they never read the environment."""

    read_file_max_bytes: int = 1_048_576
    list_files_max: int = 1000
    command_allowlist: tuple[str, ...] = ()
    command_env_passthrough: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "TZ")
    command_timeout_s: float = 60.0
    command_output_cap_bytes: int = 65_536
    # File confinement. ``workspace_roots``: the resolved allowed roots; every step opens its
    # workspace by walking down from the root that holds it (None: the workspace is opened by
    # path, for contexts built by hand).
    workspace_roots: tuple[Path, ...] | None = None
    allow_hard_links: bool = False
    allow_git_writes: bool = False
    # The command sandbox ("bwrap" or "none") and the caps a step may lower but never raise.
    sandbox: str = "bwrap"
    sandbox_read_only_paths: tuple[str, ...] = ()
    command_network_allowlist: tuple[str, ...] = ()
    command_max_processes: int = 256
    command_max_memory_bytes: int = 4 << 30
    command_max_cpu_seconds: int = 600
    command_max_file_bytes: int = 1 << 30
    command_max_write_bytes: int = 512 << 20
    # Model answers a propose_edit step asks for before it fails (a step's input may set its own).
    propose_edit_max_attempts: int = 3
    # The configured MCP servers and the tool lists fetched from them (filled in as they are
    # listed, so not part of the limits' equality).
    mcp_servers: McpServers = field(default_factory=McpServers, compare=False)


@dataclass(frozen=True)
class InputProblem:
    """What a plan-time check found wrong with a step's input: the field (dotted, relative to
    the input, e.g. ``argv.0``) and why it cannot work."""

    field: str
    message: str


@dataclass
class ExecutorContext:
    """Everything an executor may use. Deliberately no database session: the engine records."""

    run_id: str
    step_number: int
    workspace_root: Path | None
    llm: LLMClient
    logger: logging.Logger
    limits: ExecutionLimits = field(default_factory=ExecutionLimits)
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    # Outputs of earlier steps by step number, for executors that need more than resolved $refs.
    prior_outputs: dict[int, dict[str, Any]] = field(default_factory=dict)
    attempt: int = 1
    goal: str | None = None  # the run's goal (a summary says when it asked for more than was done)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


@dataclass(frozen=True)
class Reconciliation:
    """What recovery found: ``applied`` (with the output the step would have had),
    ``not_applied`` (safe to run), or ``unknown`` (a human must decide)."""

    state: Literal["applied", "not_applied", "unknown"]
    output: dict[str, Any] | None = None
    detail: str | None = None


class Executor(abc.ABC, Generic[InputT, OutputT]):
    """A step type. Subclasses set the class attributes and implement :meth:`execute`.

    ``side_effects`` says whether the step changes the world (files, processes); ``idempotent``
    whether running it twice has the same effect as once (recovery re-runs only those).
    """

    name: ClassVar[str]
    input_model: ClassVar[type[BaseModel]]
    output_model: ClassVar[type[BaseModel]]
    side_effects: ClassVar[bool] = False
    idempotent: ClassVar[bool] = True
    requires_approval: ClassVar[bool] = False
    # Whether the step needs a workspace to run at all (refused at plan time if the run has none).
    needs_workspace: ClassVar[bool] = False
    # Whether the step reads every earlier step's output (context.prior_outputs); loading them
    # costs a query, so only executors that say so get them.
    needs_prior_outputs: ClassVar[bool] = False
    # Whether a worker may start the step while the write that claimed it is still committing:
    # only for steps that change nothing and call no model, so that a start whose claim then
    # fails to commit costs nothing and is simply forgotten (the step runs again when claimed).
    may_start_early: ClassVar[bool] = False
    # Whether the step tells the run something about the world (a file read, a listing, a
    # command's result, an analysis): in a run with adaptive planning, the planner is asked
    # after each such step whether the rest of the plan still stands.
    observes: ClassVar[bool] = False
    # The executor's own version, recorded in each run's manifest; None: the version of the
    # distribution that ships it (the engine's for the built-ins).
    version: ClassVar[str | None] = None

    def requires_approval_for(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None = None
    ) -> bool:
        """Whether this step needs approval by default, before any policy: the class flag,
        unless the executor can tell from the input (e.g. a tool its server marks read-only)."""
        return self.requires_approval

    def tool_name(self, input: InputT) -> str | None:
        """The tool or command this step calls, naming its ``execute_tool`` span; None (the
        default): the step is not a tool call."""
        return None

    @abc.abstractmethod
    async def execute(self, input: InputT, context: ExecutorContext) -> OutputT:
        """Do the step and return its output; raise an ``EngineError`` subclass on failure."""

    async def preview(self, input: InputT, context: ExecutorContext) -> dict[str, Any]:
        """What the step will do, shown to an approver before it runs (diff, argv, cwd, …).

        The default shows the input; side-effecting executors override it with the exact effect.
        """
        return {"input": input.model_dump(mode="json")}

    def bind_preview(self, input_data: dict[str, Any], preview: dict[str, Any]) -> dict[str, Any]:
        """The input to run after approval, pinned to what the approver saw (e.g. a file hash).

        The default runs the input unchanged; executors whose effect depends on the world
        override it so that a world that changed since approval fails the step instead.
        """
        return input_data

    async def reconcile(
        self, input: InputT, intent: dict[str, Any], context: ExecutorContext
    ) -> Reconciliation:
        """After a crash between intent and outcome: did the effect happen?

        The default knows nothing: a side-effecting step's outcome is unknown (it is not re-run
        behind anyone's back); a step without side effects simply runs again.
        """
        return Reconciliation("unknown" if self.side_effects else "not_applied")

    def check_plan_input(
        self, input_data: dict[str, Any], limits: ExecutionLimits | None
    ) -> list[InputProblem]:
        """Problems with the input knowable when the plan is created, before anything runs.

        ``input_data`` has passed :meth:`validate_input` except where it holds ``{"$ref": …}``
        values, which are not resolved yet: only literal values are checked. ``limits`` is
        ``None`` when the engine's caps are unknown; then only what does not depend on them is
        checked. The step is checked again when it runs; the default finds nothing.
        """
        return []

    def validate_input(self, data: dict[str, Any]) -> InputT:
        """Parse raw step input with the executor's model (raises pydantic.ValidationError)."""
        return self.input_model.model_validate(data)  # type: ignore[return-value]
