"""Following a run until it ends: a live view of its steps (spinners, durations, tokens, cost so
far) driven by its event stream, and, when it waits for a person, the question: approve, reject
or show more (or, for a budget pause, raise the budget). Without a terminal to ask on, it stops
with :data:`EXIT_WAITING` and one line saying which step waits."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.live import Live
from rich.prompt import Prompt

from agent_engine.cli.remote import money
from agent_engine.cli.run_views import (
    error_text,
    live_view,
    progress_line,
    waiting_summary,
    what_it_will_do,
)

if TYPE_CHECKING:
    from agent_engine.client import EngineClient, RunWithSteps, StepOut

EXIT_FAILED = 1  # the run failed or was cancelled
EXIT_WAITING = 3  # the run waits for a person and there is no terminal to ask on
FINISHED = frozenset({"completed", "failed", "cancelled"})
REFRESH_S = 0.1
REASON_OF_RAISE = "raised at the prompt of `agent-engine run`"


@dataclass
class Follower:
    """Follows one run; ``interactive`` says whether a person can be asked (stdin a TTY)."""

    client: EngineClient
    run_id: str
    live: bool
    interactive: bool
    # How to decide later, said when nobody can be asked now.
    hint: str = "decide with `agent-engine runs approve RUN` or `runs reject RUN --reason …`"
    out: Console = field(default_factory=lambda: Console(highlight=False))
    last_seq: int = 0
    shown: dict[int, str] = field(default_factory=dict)

    def follow(self) -> int:
        """Watch and ask until the run ends; the exit status for the command."""
        while True:
            run = self._watch()
            if run.status in FINISHED:
                return self._ended(run)
            if not self._ask(run):
                return EXIT_WAITING

    def _watch(self) -> RunWithSteps:
        """Show the run as its events come, until it ends or waits for a person."""
        run = self.client.get_run(self.run_id)
        if self.live and self.out.is_terminal:
            with Live(live_view(run), console=self.out, refresh_per_second=8) as view:
                for _ in self._changes():
                    view.update(live_view(self.client.get_run(self.run_id)))
                run = self.client.get_run(self.run_id)
                view.update(live_view(run))
            return run
        for _ in self._changes():
            if self.live:
                self._print_changes(self.client.get_run(self.run_id))
        run = self.client.get_run(self.run_id)
        if self.live:
            self._print_changes(run)
        return run

    def _changes(self) -> Iterator[None]:
        """A tick per event worth a new look at the run (at most every REFRESH_S: a burst of
        events is one look), until the stream ends."""
        looked = 0.0
        for event in self.client.events(self.run_id, until="waiting", after=self.last_seq):
            self.last_seq = event.seq
            if time.monotonic() - looked >= REFRESH_S:
                looked = time.monotonic()
                yield

    def _print_changes(self, run: RunWithSteps) -> None:
        for step in run.steps:
            if self.shown.get(step.step_number) != step.status:
                self.shown[step.step_number] = step.status
                self.out.print(progress_line(step))

    def _ended(self, run: RunWithSteps) -> int:
        tokens = run.input_tokens + run.output_tokens
        self.out.print(
            f"run {run.id} {run.status}: tokens {tokens}, cost {money(run.total_cost_usd)}"
        )
        if run.status == "completed":
            return 0
        if run.error:
            typer.echo(f"error: run {run.id} {run.status}: {error_text(run.error)}", err=True)
        else:
            typer.echo(f"error: run {run.id} {run.status}", err=True)
        return EXIT_FAILED

    def _ask(self, run: RunWithSteps) -> bool:
        """Put what waits to the person; False when nobody can be asked."""
        waiting = [s for s in run.steps if s.status == "awaiting_approval"]
        if not waiting and run.status != "awaiting_approval":
            return True  # the stream ended early (the server went away a moment): look again
        if not self.interactive:
            what = waiting_summary(waiting[0]) if waiting else self._run_waits(run)
            typer.echo(
                f"run {run.id} waits: {what}; {self.hint.replace('RUN', str(run.id))}", err=True
            )
            return False
        if waiting:
            for step in waiting:
                self._decide_step(step)
        elif run.budget_pause:
            self._raise_budget(run.budget_pause, None)
        elif run.status == "awaiting_approval":
            self._decide_plan(run)
        return True

    @staticmethod
    def _run_waits(run: RunWithSteps) -> str:
        if run.budget_pause:
            return "its planner's model call waits for budget"
        if run.status == "awaiting_approval":
            return "its plan awaits approval"
        return f"it is {run.status}"

    def _decide_step(self, step: StepOut) -> None:
        if step.budget_pause:
            self._raise_budget(step.budget_pause, step)
            return
        self.out.print(what_it_will_do(step))
        while True:
            answer = Prompt.ask(
                "[a]pprove, [r]eject or [s]how more", choices=["a", "r", "s"], console=self.out
            )
            if answer == "s":
                self.out.print(what_it_will_do(step, everything=True))
                continue
            if answer == "a":
                self.client.approve(self.run_id, str(step.id), "approved at the terminal")
                self.out.print(f"step {step.step_number} approved")
            else:
                reason = ""
                while not reason.strip():
                    reason = Prompt.ask("reason", console=self.out)
                self.client.reject(self.run_id, str(step.id), reason)
                self.out.print(f"step {step.step_number} rejected")
            return

    def _decide_plan(self, run: RunWithSteps) -> None:
        plan = self.client.plan(self.run_id)
        self.out.print(f"plan version {plan.version} awaits approval:")
        for number, step in enumerate(plan.document.get("steps", []), start=1):
            self.out.print(f"  {number}. {step.get('step_type')} {step.get('input_data')}")
        answer = Prompt.ask("[a]pprove or [r]eject the plan", choices=["a", "r"], console=self.out)
        if answer == "a":
            self.client.approve_plan(self.run_id, "approved at the terminal")
        else:
            self.client.reject_plan(self.run_id, Prompt.ask("reason", console=self.out) or "-")

    def _raise_budget(self, pause: dict[str, object], step: StepOut | None) -> None:
        where = f"step {step.step_number}" if step else "the planner"
        measure = str(pause.get("measure", "usd"))
        self.out.print(f"{where} waits for budget: {pause}")
        answer = Prompt.ask(
            "[r]aise the budget or [c]ancel the run", choices=["r", "c"], console=self.out
        )
        if answer == "c":
            self.client.cancel(self.run_id, "cancelled at the prompt of `agent-engine run`")
            return
        while True:
            text = Prompt.ask(
                f"new {'token' if measure == 'tokens' else 'USD'} budget", console=self.out
            )
            try:
                amount = Decimal(text)
            except InvalidOperation:
                continue
            if not amount.is_finite() or amount < 0:
                continue
            if measure == "tokens":
                self.client.change_budget(
                    self.run_id, reason=REASON_OF_RAISE, budget_tokens=int(amount)
                )
            else:
                self.client.change_budget(self.run_id, reason=REASON_OF_RAISE, budget_usd=amount)
            return


def follow_run(client: EngineClient, run_id: str, *, live: bool, hint: str | None = None) -> int:
    """Follow the run (a live view when ``live``), asking on the terminal when it waits; the
    command's exit status: 0 completed, 1 failed or cancelled, 3 waits with nobody to ask."""
    follower = Follower(client, run_id, live=live, interactive=sys.stdin.isatty())
    if hint:
        follower.hint = hint
    return follower.follow()
