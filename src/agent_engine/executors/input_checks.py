"""Plan-time checks of a step's literal input: lexical only, nothing on disk is looked at.

The executors confine every path again when the step runs (directory handles, symlinks checked);
these checks only refuse, before the run starts, inputs that could never be confined.
"""

from __future__ import annotations

from typing import Any

from agent_engine.executors.base import InputProblem


def literal_string(input_data: dict[str, Any], name: str) -> str | None:
    """The value of ``name`` when it is a literal string (not a ``$ref``, not absent)."""
    value = input_data.get(name)
    return value if isinstance(value, str) else None


def workspace_path_problem(field: str, path: str) -> InputProblem | None:
    """Why ``path`` would leave the workspace (absolute, or with a ``..`` component), if it does.

    Step paths are relative to the workspace root; an absolute path would also pin the plan to
    one host's directory layout.
    """
    if not path:
        return InputProblem(field, "the path is empty")
    if "\x00" in path:
        return InputProblem(field, "the path contains a NUL byte")
    if path.startswith("/"):
        return InputProblem(
            field, f"{path!r} is absolute; paths are relative to the workspace root"
        )
    if ".." in path.split("/"):
        return InputProblem(
            field, f"{path!r} has a '..' component, which would leave the workspace"
        )
    return None
