"""Printing the figures: rich tables on a terminal, or Markdown (``--markdown``) for the README."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from bench.analyze_figures import TextTable
from bench.figures import Figure, Section
from bench.sql_profile import PHASES, StatementProfile

HOT_PATH = ("claim", "execute", "record", "heartbeat", "other")


@dataclass(frozen=True)
class ProfileReport:
    """The statements one backend's sequential workload issued, and how many steps/runs it ran."""

    backend: str
    profile: StatementProfile
    steps: int
    runs: int
    workload: str = "no-op"  # the step type the workload is made of


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit == "steps/s" or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _ratio(figure: Figure) -> str:
    return "–" if figure.ratio is None else f"{figure.ratio:.2f}×"


def _figure_rows(section: Section) -> list[list[str]]:
    return [
        [
            f.backend,
            f"{f.metric} ({f.unit})",
            _number(f.ours, f.unit),
            _number(f.dbos, f.unit),
            _ratio(f),
            f.verdict,
        ]
        for f in section.figures
    ]


def figure_headers(other: str) -> list[str]:
    return ["backend", "metric", "ours", other, f"ours ÷ {other}", f"ours vs {other}"]


def _phase_rows(report: ProfileReport) -> list[list[str]]:
    profile = report.profile
    rows = []
    for phase in PHASES:
        statements = profile.statements.get(phase, 0)
        transactions = profile.transactions.get(phase, 0)
        seconds = profile.seconds.get(phase, 0.0)
        if not statements and not transactions and not seconds:
            continue
        rows.append(
            [
                phase,
                _number(statements / report.steps),
                _number(transactions / report.steps),
                _number(statements / report.runs),
                _number(seconds * 1000 / report.steps),
            ]
        )
    hot = sum(profile.statements.get(p, 0) for p in HOT_PATH)
    hot_tx = sum(profile.transactions.get(p, 0) for p in HOT_PATH)
    hot_s = sum(profile.seconds.get(p, 0.0) for p in HOT_PATH)
    rows.append(
        [
            "hot path (all but create)",
            _number(hot / report.steps),
            _number(hot_tx / report.steps),
            _number(hot / report.runs),
            _number(hot_s * 1000 / report.steps),
        ]
    )
    return rows


PHASE_HEADERS = [
    "phase",
    "statements / step",
    "transactions / step",
    "statements / run",
    "wall ms / step",
]


def _shape_rows(report: ProfileReport) -> list[list[str]]:
    order = {phase: index for index, phase in enumerate(PHASES)}
    items = sorted(report.profile.shapes.items(), key=lambda kv: (order[kv[0][0]], -kv[1]))
    return [[phase, shape, _number(count / report.steps)] for (phase, shape), count in items]


STATEMENT_NOTE = (
    "Counted by a before_cursor_execute listener during the sequential workloads; asyncpg's own "
    "BEGIN/COMMIT are not cursor executions (see transactions), SQLite's BEGIN IMMEDIATE is. "
    "A worker's write of a result outside a transaction (one function call per group commit "
    "on PostgreSQL, in autocommit) is one statement and no BEGIN. "
    "claim = the worker's claim rounds (a round that claims nothing is still a transaction), "
    "record = the worker's recording of a result (its write included), execute = "
    "run_claimed (an analyze step's model call included), create = create_run (per run). wall ms = "
    "time spent inside the phase."
)
SHAPE_HEADERS = ["phase", "statement (first 80 characters)", "per step"]


class Reporter:
    """Writes the report to the console (rich) or as Markdown."""

    def __init__(self, console: Console, *, markdown: bool) -> None:
        self.console = console
        self.markdown = markdown

    def _table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if self.markdown:
            self.console.print(f"\n#### {title}\n", markup=False, highlight=False)
            lines = [
                "| " + " | ".join(headers) + " |",
                "|" + "|".join("---" for _ in headers) + "|",
            ]
            for row in rows:
                cells = [cell.replace("|", "\\|") for cell in row]
                lines.append("| " + " | ".join(cells) + " |")
            self.console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
            return
        table = Table(title=title, title_justify="left", show_lines=False)
        for index, header in enumerate(headers):
            table.add_column(header, justify="left" if index < 2 else "right")
        for row in rows:
            table.add_row(*row)
        self.console.print(table)

    def _text(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def header(self, lines: Sequence[str]) -> None:
        self._text(
            "\n### Orchestration benchmark\n" if self.markdown else "Orchestration benchmark"
        )
        for line in lines:
            self._text(f"- {line}" if self.markdown else f"  {line}")

    def section(self, section: Section) -> None:
        self._table(section.title, figure_headers(section.other), _figure_rows(section))
        for note in section.notes:
            self._text(f"\n_{note}_" if self.markdown else f"  {note}")

    def statements(self, report: ProfileReport) -> None:
        title = (
            f"SQL per step on the hot path ({report.backend}, {report.runs} runs × "
            f"{report.steps // max(report.runs, 1)} {report.workload} steps)"
        )
        self._table(title, PHASE_HEADERS, _phase_rows(report))
        self._text(f"\n_{STATEMENT_NOTE}_" if self.markdown else f"  {STATEMENT_NOTE}")
        self._table(
            f"Statement shapes ({report.backend}, {report.workload} steps)",
            SHAPE_HEADERS,
            _shape_rows(report),
        )

    def table(self, table: TextTable) -> None:
        """A table already in words, with its notes below it."""
        self._table(table.title, table.headers, table.rows)
        for note in table.notes:
            self._text(f"\n_{note}_" if self.markdown else f"  {note}")

    def problems(self, problems: Sequence[str]) -> None:
        if not problems:
            self._text("\nNo errors, stuck runs or worker warnings were seen.")
            return
        self._text("\n#### Problems seen\n" if self.markdown else "\nProblems seen:")
        for problem in problems:
            self._text(f"- {problem}")
