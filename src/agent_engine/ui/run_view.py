"""A run's story turned into what its page shows: the timeline rows, the edit diffs, the
commands, the model calls, the waiting steps and the cost chart's bars."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from agent_engine.domain.records import StepRecord
from agent_engine.domain.states import StepStatus
from agent_engine.engine.run_overview import RunStory, waiting_reason
from agent_engine.ui.diffs import Row, side_by_side

ZERO = Decimal(0)
REASON_TEXT = {
    "policy_rule": "a policy rule requires a person",
    "approval_required": "this kind of step needs approval",
    "budget": "a model call did not fit in the budget",
    "outcome_unknown": "the outcome of an earlier attempt is unknown",
    "plan_approval": "the plan waits for approval",
}


@dataclass(frozen=True)
class CallView:
    provider: str
    model: str
    messages: list[dict[str, Any]]
    request: Any
    response: Any
    answer: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    latency_ms: float
    flags: list[str]
    error: str | None


@dataclass(frozen=True)
class StepView:
    """One row of the timeline and what it opens to."""

    step: StepRecord
    duration_ms: float | None
    shown_input: Any
    diff: list[Row] | None
    diff_path: str | None
    command: dict[str, Any] | None
    tool_call: dict[str, Any] | None
    calls: list[CallView]
    waiting: bool
    reason: str | None = None
    reason_text: str | None = None
    reason_detail: dict[str, Any] = field(default_factory=dict)


def _duration(step: StepRecord) -> float | None:
    if step.started_at is not None and step.completed_at is not None:
        return (step.completed_at - step.started_at).total_seconds() * 1000
    return step.latency_ms


def _text_of(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, list):  # content parts
        return "\n".join(str(p.get("text", p)) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def _answer(response: Any) -> str | None:
    """The model's text in a recorded response (OpenAI-, Anthropic- or our own shape)."""
    if not isinstance(response, dict):
        return None
    for key in ("content", "text", "output_text"):
        if isinstance(response.get(key), str):
            return str(response[key])
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return _text_of(choices[0].get("message", {})) or None
    return None


def call_view(call: dict[str, Any]) -> CallView:
    """A ledger row as the page shows it: the prompt's messages and the answer's text."""
    request = call["request"] if isinstance(call["request"], dict) else {}
    messages = [
        {"role": str(m.get("role", "?")), "text": _text_of(m)}
        for m in request.get("messages", [])
        if isinstance(m, dict)
    ]
    flags = [name for name in ("cached", "replayed") if call[name]]
    return CallView(
        provider=call["provider"],
        model=call["model"],
        messages=messages,
        request=call["request"],
        response=call["response"],
        answer=_answer(call["response"]),
        input_tokens=call["input_tokens"],
        output_tokens=call["output_tokens"],
        cost_usd=call["cost_usd"],
        latency_ms=call["latency_ms"],
        flags=flags,
        error=call["error"],
    )


def _edit_diff(step: StepRecord) -> tuple[list[Row] | None, str | None]:
    for document in (step.output_data, step.preview):
        if isinstance(document, dict) and isinstance(document.get("diff"), str):
            return side_by_side(document["diff"]), str(document.get("path", ""))
    return None, None


def _command(step: StepRecord) -> dict[str, Any] | None:
    if step.step_type != "run_command":
        return None
    given = step.resolved_input or step.input_data
    output = step.output_data or {}
    return {
        "argv": output.get("argv") or given.get("argv") or [],
        "exit_code": output.get("exit_code"),
        "stdout": output.get("stdout"),
        "stderr": output.get("stderr"),
        "ran": step.output_data is not None,
    }


def _tool_call(step: StepRecord) -> dict[str, Any] | None:
    if step.step_type != "mcp_tool":
        return None
    given = step.resolved_input or step.input_data
    output = step.output_data or {}
    return {
        "server": given.get("server"),
        "tool": given.get("tool"),
        "arguments": given.get("arguments", {}),
        "content": output.get("content"),
        "structured": output.get("structured_content"),
    }


def step_views(story: RunStory) -> list[StepView]:
    """The timeline, in plan order."""
    views: list[StepView] = []
    for step in story.steps:
        diff, path = _edit_diff(step)
        waiting = step.status == StepStatus.AWAITING_APPROVAL
        reason, detail = waiting_reason(story.run, step) if waiting else (None, {})
        views.append(
            StepView(
                step=step,
                duration_ms=_duration(step),
                shown_input=step.resolved_input
                if step.resolved_input is not None
                else step.input_data,
                diff=diff,
                diff_path=path,
                command=_command(step),
                tool_call=_tool_call(step),
                calls=[call_view(c) for c in story.calls.get(step.id, [])],
                waiting=waiting,
                reason=reason,
                reason_text=REASON_TEXT.get(reason or ""),
                reason_detail=detail,
            )
        )
    return views


@dataclass(frozen=True)
class Bar:
    label: str
    cost_usd: Decimal
    tokens: int
    percent: float


def _bars(rows: list[tuple[str, Decimal, int]]) -> list[Bar]:
    """Bars scaled to the largest cost, or to the most tokens when nothing cost anything."""
    by_cost = any(cost > 0 for _, cost, _ in rows)
    values = [float(cost) if by_cost else float(tokens) for _, cost, tokens in rows]
    top = max(values, default=0.0) or 1.0
    return [
        Bar(label, cost, tokens, round(100 * value / top, 1))
        for (label, cost, tokens), value in zip(rows, values, strict=True)
    ]


def cost_chart(summary: dict[str, Any]) -> dict[str, Any]:
    """The chart's two series (by step, by model) and what the bars measure."""
    steps = [
        (
            f"#{row['step_number']} {row['step_type']}"
            if row["step_number"] is not None
            else str(row["step_type"]),
            row["cost_usd"],
            row["input_tokens"] + row["output_tokens"],
        )
        for row in summary["by_step"]
    ]
    models = [
        (name, row["cost_usd"], row["input_tokens"] + row["output_tokens"])
        for name, row in summary["by_model"].items()
    ]
    measured = "cost" if any(c > 0 for _, c, _ in steps) else "tokens"
    return {"by_step": _bars(steps), "by_model": _bars(models), "measured": measured}


def budget_bar(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Spent, reserved and remaining as shares of the budget (None: the run has no budget)."""
    budget = summary.get("budget_usd")
    spent: Decimal = summary.get("spent_usd") or ZERO
    reserved: Decimal = summary.get("reserved_usd") or ZERO
    if budget is None:
        return None
    whole = max(Decimal(budget), spent + reserved) or Decimal(1)
    return {
        "budget_usd": budget,
        "spent_usd": spent,
        "reserved_usd": reserved,
        "remaining_usd": summary.get("remaining_usd"),
        "spent_percent": float(100 * spent / whole),
        "reserved_percent": float(100 * reserved / whole),
    }
