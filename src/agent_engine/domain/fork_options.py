"""What a fork records in its run's ``options["fork"]``, and what the engine reads back from it.

``{"from_step": 3, "override": "input_data" | "output_data" | "model" | None, "model": "p:m" |
None, "replay": bool}``. ``model`` pins the model of the step ``from_step`` (the router honours it
as ``hints.model``); ``replay`` asks for the model calls of the later steps to be served from
the forked run's records until the first miss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FORK_OPTION = "fork"


def fork_options(
    *, from_step: int, override: str | None, model: str | None, replay: bool
) -> dict[str, Any]:
    """The ``options["fork"]`` document of a new fork."""
    return {"from_step": from_step, "override": override, "model": model, "replay": replay}


def pinned_model(options: Mapping[str, Any], step_number: int) -> str | None:
    """The model a fork pinned for step ``step_number`` of its run (None: the router decides)."""
    fork = options.get(FORK_OPTION)
    if not isinstance(fork, Mapping) or fork.get("from_step") != step_number:
        return None
    model = fork.get("model")
    return model if isinstance(model, str) and model else None
