"""Comparing one step of two runs: what differs, and the divergence verdict of a replay or fork.

Pure functions over ``StepRecord`` values (no I/O). Which fields of an output are looked at first
and which are never compared depends on the step type: a command's ``exit_code``, ``stdout``
and ``stderr`` come first and its ``duration_ms`` differs on every run; a file read is told by
its content hash (``sha256``), and names the file.
"""

from __future__ import annotations

import hashlib
from typing import Any

from agent_engine.domain.json_diff import Difference, first_difference
from agent_engine.domain.records import StepRecord

REACHED = frozenset({"completed", "skipped", "rejected"})
_OUTPUT_ORDER: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # step type: (fields compared first, fields never compared)
    "run_command": (("exit_code", "stdout", "stderr"), ("duration_ms",)),
    "read_file": (("sha256",), ()),
    "analyze": (("text", "structured"), ()),
    "summarize": (("text", "structured"), ()),
}


def input_difference(expected: StepRecord, actual: StepRecord) -> Difference | None:
    """The first difference of the steps' inputs: as planned, then as resolved (when both
    steps resolved theirs: a reference may name an output that differs)."""
    found = first_difference(expected.input_data, actual.input_data, "input_data")
    if found is not None:
        return found
    if expected.resolved_input is None or actual.resolved_input is None:
        return None
    return first_difference(expected.resolved_input, actual.resolved_input, "resolved_input")


def output_difference(expected: StepRecord, actual: StepRecord) -> Difference | None:
    """The first difference of the steps' outputs, the step type's telling fields first."""
    first, ignore = _OUTPUT_ORDER.get(actual.step_type, ((), ()))
    before, after = expected.output_data, actual.output_data
    if actual.step_type == "read_file":
        before, after = _with_sha256(before), _with_sha256(after)
    return first_difference(before, after, "output", first=first, ignore=ignore)


def _with_sha256(output: dict[str, Any] | None) -> dict[str, Any] | None:
    """A read_file output with its content hash (outputs recorded without one get it computed
    from the content they hold)."""
    if output is None or "sha256" in output or not isinstance(output.get("content"), str):
        return output
    return {**output, "sha256": hashlib.sha256(output["content"].encode("utf-8")).hexdigest()}


def _file_details(expected: StepRecord, actual: StepRecord) -> dict[str, Any]:
    before, after = _with_sha256(expected.output_data), _with_sha256(actual.output_data)
    path = (after or {}).get("path") or (before or {}).get("path") or actual.input_data.get("path")
    return {
        "file": path,
        "expected_sha256": (before or {}).get("sha256"),
        "actual_sha256": (after or {}).get("sha256"),
    }


def divergence_of(expected: StepRecord | None, actual: StepRecord | None) -> dict[str, Any]:
    """The divergence verdict of ``actual`` (a step of the replay or fork) against
    ``expected`` (the same step of the run it came from): ``match``, ``diverged`` with the
    first differing field, or ``not_reached``."""
    step = actual or expected
    assert step is not None
    row: dict[str, Any] = {
        "step_number": step.step_number,
        "step_type": step.step_type,
        "status": actual.status if actual is not None else None,
        "reused": actual is not None and actual.reused_from is not None,
    }
    if actual is None or actual.status not in REACHED:
        return {**row, "verdict": "not_reached"}
    if expected is None:
        difference = Difference("step", None, {"step_type": actual.step_type}, absent="expected")
        return {**row, "verdict": "diverged", **difference.as_dict()}
    if actual.reused_from is not None:
        return {**row, "verdict": "match"}  # the very step, reused
    if expected.step_type != actual.step_type:
        found: Difference | None = Difference("step_type", expected.step_type, actual.step_type)
    elif expected.status != actual.status:
        found = Difference("status", expected.status, actual.status)
    else:
        found = input_difference(expected, actual) or output_difference(expected, actual)
    if found is None:
        return {**row, "verdict": "match"}
    row = {
        **row,
        "verdict": "diverged",
        **found.as_dict(),
        "expected_hash": expected.output_hash if found.path.startswith("output") else None,
        "actual_hash": actual.output_hash if found.path.startswith("output") else None,
    }
    if found.path.startswith("output") and actual.step_type == "read_file":
        row.update(_file_details(expected, actual))
    kept = {"status", "expected", "actual"}
    return {key: value for key, value in row.items() if value is not None or key in kept}


def duration_ms(step: StepRecord) -> float | None:
    """How long the step ran: its recorded latency, else completion minus start (None: it did
    not run here, e.g. a reused step)."""
    if step.latency_ms is not None:
        return step.latency_ms
    if step.started_at is None or step.completed_at is None:
        return None
    return (step.completed_at - step.started_at).total_seconds() * 1000
