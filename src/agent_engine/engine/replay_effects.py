"""Verify mode: a side-effecting step of a verify replay does not act; its original's recorded
output stands in for it, after the one check that can be made without acting.

- A step that wrote a file (its recorded output has ``path``, ``before_sha256`` and
  ``after_sha256``: edit_file) is checked against the file as it is now: its hash must be the
  recorded before-hash (the workspace is as the original found it) or the recorded after-hash
  (the edit is already there, e.g. the original's own workspace after it ran). Anything else
  fails the step with ``stale_edit``, naming both hashes.
- A command is not run and an MCP tool is not called: the recorded result is the output.
- A step that failed in the original fails the same way, without acting.
"""

from __future__ import annotations

import hashlib
from typing import Any

from agent_engine.engine.context import EngineContext
from agent_engine.engine.replay_calls import ReplaySource
from agent_engine.errors import ExecutorError, ReplayDivergedError, StaleEditError
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.workspace import run_blocking
from agent_engine.executors.workspace_roots import workspace_of
from agent_engine.storage.database import read_transaction
from agent_engine.storage.replay_records import recorded_step_txn


async def _current_sha256(context: ExecutorContext, path: str) -> str | None:
    workspace = workspace_of(context)
    data = await run_blocking(
        workspace.read_bytes_if_exists, path, context.limits.read_file_max_bytes
    )
    return hashlib.sha256(data).hexdigest() if data is not None else None


async def _check_file(step_number: int, recorded: dict[str, Any], context: ExecutorContext) -> None:
    path = recorded.get("path")
    if not isinstance(path, str) or "after_sha256" not in recorded:
        return  # not a file write: nothing on disk to check
    before, after = recorded.get("before_sha256"), recorded.get("after_sha256")
    actual = await _current_sha256(context, path)
    if actual in (before, after):
        return
    raise StaleEditError(
        f"step {step_number}: {path} has hash {actual}, neither the recorded before-hash "
        f"{before} nor the after-hash {after}: the workspace is not the original's",
        path=path,
        expected_sha256=before,
        after_sha256=after,
        actual_sha256=actual,
        file_exists=actual is not None,
    )


async def recorded_effect(
    ctx: EngineContext,
    source: ReplaySource,
    step_number: int,
    step_type: str,
    context: ExecutorContext,
) -> dict[str, Any]:
    """The original step's recorded output, served instead of acting (see the module's doc)."""
    async with read_transaction(ctx.sessions) as session:
        original = await recorded_step_txn(session, source.run_id, step_number)
        found = (
            None
            if original is None
            else (original.step_type, original.output_data, original.error, original.status)
        )
    if found is None or found[0] != step_type:
        raise ReplayDivergedError(
            f"step {step_number}: the original run has no {step_type} step {step_number} "
            "to take the result from",
            step_number=step_number,
            step_type=step_type,
            recorded_step_type=found[0] if found is not None else None,
        )
    _, output, error, status = found
    if output is None:
        message = (error or {}).get("message") or f"it ended {status}"
        raise ExecutorError(
            f"step {step_number} did not complete in the original run: {message}",
            recorded_error=error,
        )
    await _check_file(step_number, output, context)
    return dict(output)
