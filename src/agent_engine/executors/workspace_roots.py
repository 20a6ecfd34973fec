"""Which folder is a run's workspace: strictly inside a configured root when the run is made,
and reached again from that root at every step (a parent swapped for a symlink is refused)."""

from __future__ import annotations

from pathlib import Path

from agent_engine.errors import ExecutorError
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.path_walk import violation
from agent_engine.executors.workspace import Workspace


def check_workspace_root(path: str, roots: list[Path]) -> Path:
    """Resolve a run's workspace directory and refuse it unless it lies strictly inside a
    configured root: a root itself holds every other run's workspace, so it is never one."""
    if not path or "\x00" in path:
        raise violation(path, "empty path or NUL byte")
    try:
        resolved = Path(path).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise violation(path, "workspace does not exist or cannot be resolved") from exc
    if not resolved.is_dir():
        raise violation(path, "workspace is not a directory")
    is_a_root = False
    for root in roots:
        try:
            allowed = root.resolve(strict=True)
        except (OSError, RuntimeError):
            continue  # a missing configured root cannot contain anything
        if resolved == allowed:
            is_a_root = True  # still fine if another root contains it strictly
        elif resolved.is_relative_to(allowed):
            return resolved
    if is_a_root:
        raise violation(
            path,
            "workspace is a configured workspace root itself, which holds every other run's "
            "workspace; use a folder inside it",
        )
    raise violation(path, "workspace is outside every configured workspace root")


def workspace_of(context: ExecutorContext) -> Workspace:
    """The step's workspace, reached again from the allowed root that holds it; an
    ExecutorError when the run has none, a violation when no configured root holds it now."""
    root = context.workspace_root
    if root is None:
        raise ExecutorError("this step needs a workspace and the run has none")
    limits = context.limits
    base: Path | None = None
    if limits.workspace_roots is not None:
        base = next(
            (r for r in limits.workspace_roots if root.is_relative_to(r) and root != r), None
        )
        if base is None:
            raise violation(str(root), "the workspace is outside every configured workspace root")
    return Workspace(
        root,
        base=base,
        allow_hard_links=limits.allow_hard_links,
        allow_git_writes=limits.allow_git_writes,
    )
