"""The executor registry, built once at start-up from the ``agent_engine.executors`` group."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from agent_engine.errors import PlanValidationError
from agent_engine.executors.base import Executor

ENTRY_POINT_GROUP = "agent_engine.executors"
logger = logging.getLogger(__name__)

AnyExecutor = Executor[Any, Any]


class ExecutorRegistry(Mapping[str, AnyExecutor]):
    """Immutable name → executor map; duplicate names are refused when it is built."""

    def __init__(self, executors: Iterable[AnyExecutor]) -> None:
        self._by_name: dict[str, AnyExecutor] = {}
        for executor in executors:
            if executor.name in self._by_name:
                raise ValueError(f"two executors are named {executor.name!r}")
            self._by_name[executor.name] = executor

    def __getitem__(self, name: str) -> AnyExecutor:
        return self._by_name[name]

    def __iter__(self) -> Any:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def resolve(self, step_number: int, step_type: str) -> AnyExecutor:
        """The executor for ``step_type``, or a plan error naming the step."""
        try:
            return self._by_name[step_type]
        except KeyError:
            raise PlanValidationError(
                f"step {step_number}: unknown step_type {step_type!r}",
                errors=[
                    {
                        "step_number": step_number,
                        "field": "step_type",
                        "message": f"unknown step type; known: {sorted(self._by_name)}",
                    }
                ],
            ) from None

    def validate_step(self, step_number: int, step_type: str, input_data: dict[str, Any]) -> None:
        """Refuse an unknown type or input its model rejects, naming the step and the field.

        ``$ref`` values are resolved only when the step runs, so a field holding a reference is
        checked then, not here.
        """
        executor = self.resolve(step_number, step_type)
        try:
            executor.validate_input(input_data)
        except ValidationError as exc:
            errors = [
                {
                    "step_number": step_number,
                    "field": ".".join(str(part) for part in err["loc"]) or "input_data",
                    "message": err["msg"],
                }
                for err in exc.errors()
                if not _is_reference_error(input_data, err["loc"])
            ]
            if errors:
                first = errors[0]
                raise PlanValidationError(
                    f"step {step_number} ({step_type}): input_data.{first['field']}: "
                    f"{first['message']}",
                    errors=errors,
                ) from exc


def _is_reference_error(data: Any, loc: tuple[int | str, ...]) -> bool:
    """Whether the value at ``loc`` (or a parent of it) is a ``{"$ref": …}`` placeholder."""
    node = data
    for part in loc:
        if isinstance(node, dict) and "$ref" in node:
            return True
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, dict) and "$ref" in node


def load_registry() -> ExecutorRegistry:
    """Every executor registered under the entry point group, built-ins included."""
    executors: list[AnyExecutor] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except (ImportError, AttributeError) as exc:
            # A broken third-party plugin must not take the engine down; say which one and why.
            logger.error("executor plugin %s could not be loaded: %s", ep.name, exc)
            continue
        executor = loaded() if isinstance(loaded, type) else loaded
        if not isinstance(executor, Executor):
            logger.error("entry point %s is not an Executor", ep.name)
            continue
        executors.append(executor)
    return ExecutorRegistry(executors)
