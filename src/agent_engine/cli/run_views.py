"""How a run looks in the terminal: its step table, its budget bar, one line per event, and what
a waiting step will do (the diff of an edit, the argv of a command, the budget it needs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.spinner import Spinner
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from agent_engine.cli.remote import money

if TYPE_CHECKING:
    from agent_engine.client import RunEvent, RunOut, RunWithSteps, StepOut

BAR_WIDTH = 30
GOAL_CHARS = 48
SHOWN_DIFF_LINES = 40
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "rejected": "red",
    "cancelled": "yellow",
    "awaiting_approval": "magenta",
    "running": "cyan",
}


def styled(status: str) -> str:
    """A status with its colour (markup)."""
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def duration(step: StepOut, now: datetime | None = None) -> str:
    """How long the step ran (so far, while it runs)."""
    if step.started_at is None:
        return "-"
    end = step.completed_at or now or datetime.now(UTC)
    seconds = max((end - step.started_at).total_seconds(), 0.0)
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def step_table(run: RunWithSteps, *, live: bool = False) -> Table:
    """One row per step: number, type, status, duration, model, tokens, cost."""
    table = Table("#", "type", "status", "duration", "model", "tokens", "cost")
    for step in run.steps:
        status: RenderableType = Text.from_markup(styled(step.status))
        if live and step.status == "running":
            status = Spinner("dots", text=Text.from_markup(styled(step.status)))
        tokens = step.input_tokens + step.output_tokens
        table.add_row(
            str(step.step_number),
            escape(step.step_type),
            status,
            duration(step),
            escape(step.model or "-"),
            str(tokens) if tokens else "-",
            money(step.cost_usd),
        )
    return table


def budget_bar(cost: dict[str, Any]) -> str:
    """Spent, reserved and remaining of the run's budget as a bar and figures (markup)."""
    spent, reserved = cost.get("spent_usd") or 0, cost.get("reserved_usd") or 0
    budget = cost.get("budget_usd")
    figures = f"spent {money(spent)} · reserved {money(reserved)}"
    if budget is None:
        return f"budget: none · {figures}"
    limit = float(budget)
    filled = round(BAR_WIDTH * min(float(spent) / limit, 1.0)) if limit > 0 else BAR_WIDTH
    held = round(BAR_WIDTH * min(float(reserved) / limit, 1.0)) if limit > 0 else 0
    held = min(held, BAR_WIDTH - filled)
    bar = f"[red]{'█' * filled}[/][yellow]{'▒' * held}[/]{'░' * (BAR_WIDTH - filled - held)}"
    remaining = money(cost.get("remaining_usd"))
    return f"budget {money(budget)} {bar} {figures} · remaining {remaining}"


def run_header(run: RunOut) -> str:
    """The run's id, status, goal, workspace and totals (markup)."""
    tokens = run.input_tokens + run.output_tokens
    lines = [
        f"run {run.id}: {styled(run.status)}",
        f"goal: {escape(run.goal)}",
        f"workspace: {escape(run.workspace or '-')}",
        f"cost {money(run.total_cost_usd)} · tokens {tokens}",
    ]
    if run.error:
        lines.append(f"[red]error:[/] {escape(error_text(run.error))}")
    return "\n".join(lines)


def error_text(error: dict[str, Any]) -> str:
    """A run's error in one line: its message, or the failed step's code and message."""
    if error.get("message"):
        return str(error["message"])
    inner = error.get("error")
    if isinstance(inner, dict):
        where = f"step {error['step_number']}: " if error.get("step_number") else ""
        return f"{where}{inner.get('code')}: {inner.get('message')}"
    return json.dumps(error, default=str)


def live_view(run: RunWithSteps) -> RenderableType:
    """What ``run --follow`` shows while the run goes on."""
    tokens = run.input_tokens + run.output_tokens
    footer = (
        f"run {run.id} {styled(run.status)} · {len(run.steps)} steps · "
        f"tokens {tokens} · cost so far {money(run.total_cost_usd)}"
    )
    return Group(step_table(run, live=True), Text.from_markup(footer))


def progress_line(step: StepOut) -> str:
    """One plain line for a step's new status (when the output is not a terminal)."""
    extra = f" ({duration(step)}, {money(step.cost_usd)})" if step.completed_at else ""
    return f"step {step.step_number} {step.step_type}: {step.status}{extra}"


def event_line(event: RunEvent) -> str:
    """One event: seq, time, type and what its payload says in short."""
    stamp = event.created_at.astimezone().strftime("%H:%M:%S")
    payload = json.dumps(event.payload, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(payload) > 100:
        payload = payload[:99] + "…"
    return f"{event.seq:>4} {stamp} {event.type:<24} {payload}"


def short_goal(goal: str) -> str:
    """A goal cut to a table cell."""
    goal = goal.replace("\n", " ")
    return goal if len(goal) <= GOAL_CHARS else goal[: GOAL_CHARS - 1] + "…"


def age(created_at: datetime) -> str:
    """How long ago, in the largest unit that fits."""
    seconds = max((datetime.now(UTC) - created_at).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def waiting_summary(step: StepOut) -> str:
    """One line saying which step waits and why."""
    if step.budget_pause:
        measure = step.budget_pause.get("measure", "usd")
        return f"step {step.step_number} ({step.step_type}) waits for budget ({measure})"
    why = f": {step.approval_rule}" if step.approval_rule else ""
    return f"step {step.step_number} ({step.step_type}) awaits approval{why}"


def what_it_will_do(step: StepOut, *, everything: bool = False) -> RenderableType:
    """The diff an edit will apply, the argv a command will run, or the budget a call needs;
    ``everything`` adds the full preview and resolved input."""
    preview = step.preview or {}
    parts: list[RenderableType] = [Text(waiting_summary(step), style="bold")]
    if step.budget_pause:
        parts.append(Text(json.dumps(step.budget_pause, indent=2, default=str)))
    elif "diff" in preview:
        diff = str(preview.get("diff") or "")
        lines = diff.splitlines()
        if not everything and len(lines) > SHOWN_DIFF_LINES:
            more = len(lines) - SHOWN_DIFF_LINES
            diff = "\n".join([*lines[:SHOWN_DIFF_LINES], f"… {more} more lines (show more)"])
        parts.append(Text(f"edit {preview.get('path')} ({preview.get('operation')})"))
        parts.append(Syntax(diff, "diff", theme="ansi_dark", word_wrap=True))
    elif "argv" in preview:
        argv = " ".join(json.dumps(arg) if " " in str(arg) else str(arg) for arg in preview["argv"])
        parts.append(Text(f"command: {argv}"))
        parts.append(Text(f"in {preview.get('cwd')} · network {preview.get('network')}"))
    if everything:
        shown = {"preview": preview, "input": step.resolved_input or step.input_data}
        parts.append(Text(json.dumps(shown, indent=2, ensure_ascii=False, default=str)))
    return Group(*parts)
