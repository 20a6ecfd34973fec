"""What `serve` says when it starts: one line with the database, the worker, the model and the
workspace roots, so a newcomer sees at once what the defaults chose."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from agent_engine.config import Settings


def shown_database_url(url: str) -> str:
    """``url`` fit for a log line or an error message: the password replaced by ``***``."""
    return make_url(url).render_as_string(hide_password=True)


def describe_model(settings: Settings) -> str:
    """Which model answers LLM calls: the pinned one, the remote router, or the models of the
    catalog that are usable now (a provider without its API key set is not)."""
    # Imported here: the catalog is needed by `serve` only, not by every command's start.
    from agent_engine.llm.catalog import CatalogError, cached_catalog

    if settings.model:
        return f"model {settings.model} (pinned by AGENT_ENGINE_MODEL)"
    if settings.router_url:
        return f"models chosen by the router at {settings.router_url}"
    try:
        catalog = cached_catalog(settings.models_file)
    except CatalogError as exc:
        return f"no model: {exc.detail}"
    usable = [entry for entry in catalog.models if catalog.unavailable_reason(entry) is None]
    # A last-resort model (the offline one) only answers when nothing else can.
    regular = [entry.id for entry in usable if not entry.last_resort]
    chosen = regular or [entry.id for entry in usable]
    if not chosen:
        return "no usable model in the catalog (set a provider's API key or enable a model)"
    if len(chosen) == 1:
        return f"model {chosen[0]} (routed in-process)"
    return f"models {', '.join(chosen)} (routed in-process by tier and price)"


def describe_sandbox(settings: Settings) -> str:
    """How commands run: in bubblewrap, refused (and why), or, set by the operator, unsandboxed."""
    from agent_engine.executors.command_limits import processes_refusal
    from agent_engine.executors.sandbox import bwrap_problem

    if settings.sandbox == "none":
        return "WARNING: commands run without a sandbox (AGENT_ENGINE_SANDBOX=none)"
    problem = bwrap_problem() or processes_refusal(settings.sandbox)
    if problem is not None:
        return f"run_command refused: {problem} (install bubblewrap or set AGENT_ENGINE_SANDBOX)"
    return "commands sandboxed by bubblewrap"


def describe_serve(settings: Settings) -> str:
    """The start-up line of `serve`."""
    worker = (
        f"embedded worker on (concurrency {settings.worker_concurrency})"
        if settings.embedded_worker
        else "embedded worker off (start `agent-engine worker` to run steps)"
    )
    roots = ", ".join(str(root.absolute()) for root in settings.workspace_roots) or "none"
    return (
        f"database {shown_database_url(settings.database_url)}; {worker}; "
        f"{describe_auth(settings)}; {describe_model(settings)}; {describe_sandbox(settings)}; "
        f"workspace roots {roots}"
    )


def describe_auth(settings: Settings) -> str:
    """Whether requests need an API key, and why; with auth off, that X-Actor is believed."""
    if not settings.auth_enforced:
        return "auth off: loopback only; X-Actor honoured"
    why = "AGENT_ENGINE_AUTH_REQUIRED" if settings.auth_required else f"bound to {settings.host}"
    return f"auth on ({why}): API keys required, X-Actor ignored"


def log_to_stderr(settings: Settings) -> None:
    """Send log records to stderr as structured lines (JSON or readable:
    AGENT_ENGINE_LOG_FORMAT): the engine's and uvicorn's at the configured level, other
    libraries' from warnings up."""
    # Imported here: structlog is needed by `serve` and `worker` only.
    from agent_engine.cli.log_setup import configure_logging

    configure_logging(settings)
