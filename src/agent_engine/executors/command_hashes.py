"""The hashes a command's record carries, so that anyone can recompute what ran and what came
back from the step's output alone (the recipe is in docs/determinism.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent_engine.domain.canonical import content_hash

if TYPE_CHECKING:
    from agent_engine.executors.run_command import RunCommandOutput

# The command always gets an empty standard input (/dev/null): recorded as JSON null.
NO_STDIN = None
RESULT_FIELDS = (
    "exit_code",
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
    "stdout_bytes",
    "stderr_bytes",
    "killed",
    "timed_out",
)


def command_document(argv: list[str], cwd: str, env_keys: list[str]) -> dict[str, Any]:
    """What ran: argv, cwd relative to the workspace, the environment's names, stdin."""
    return {"argv": argv, "cwd": cwd, "env_keys": sorted(env_keys), "stdin": NO_STDIN}


def result_document(output: RunCommandOutput) -> dict[str, Any]:
    """What came back: the exit code, both streams as kept, and whether they were cut."""
    return {name: getattr(output, name) for name in RESULT_FIELDS}


def with_record_hashes(output: RunCommandOutput, started_at: str) -> RunCommandOutput:
    """``output`` with its clock reading, ``command_hash`` and ``result_hash`` filled in."""
    return output.model_copy(
        update={
            "started_at": started_at,
            "command_hash": content_hash(
                command_document(output.argv, output.cwd, output.env_keys)
            ),
            "result_hash": content_hash(result_document(output)),
        }
    )


def rehash_recorded(document: dict[str, Any]) -> dict[str, Any]:
    """A command's output document whose streams were changed after it ran (secrets masked)
    with its ``result_hash`` recomputed, so it covers what is recorded; any other document as
    it is."""
    if not isinstance(document.get("result_hash"), str) or not all(
        name in document for name in RESULT_FIELDS
    ):
        return document
    result = {name: document[name] for name in RESULT_FIELDS}
    return {**document, "result_hash": content_hash(result)}
