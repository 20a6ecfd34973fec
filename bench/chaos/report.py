"""The chaos run's table: faults injected by kind, runs by kind and status, steps by status,
requests retried (not anomalies), anomalies by kind; its last line is ``anomalies: N``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from bench.chaos.checks import Anomaly
from bench.chaos.faults import KINDS as FAULT_KINDS

WIDTH = 56


def _section(title: str, rows: Iterable[tuple[str, object]]) -> list[str]:
    lines = [title]
    lines += [f"  {name:<{WIDTH}} {value:>6}" for name, value in rows]
    return lines


def table(
    *,
    seed: int,
    seconds: float,
    faults: Mapping[str, int],
    runs: Mapping[tuple[str, str], int],
    steps: Mapping[str, int],
    retries: Mapping[str, int],
    script: Mapping[str, int],
    budgets: Mapping[str, int],
    failures: Mapping[str, int],
    anomalies: list[Anomaly],
) -> str:
    """The whole table as text."""
    by_kind = Counter(a.kind for a in anomalies)
    lines = [f"chaos run: seed {seed}, {seconds:.0f} s of faults", "-" * (WIDTH + 9)]
    lines += _section("faults injected", [(kind, faults.get(kind, 0)) for kind in FAULT_KINDS])
    run_rows = [(f"{kind} {status}", n) for (kind, status), n in sorted(runs.items())]
    lines += _section(f"runs ({sum(runs.values())})", run_rows)
    lines += _section(f"steps ({sum(steps.values())})", sorted(steps.items()))
    lines += _section("failed runs, by cause", sorted(failures.items()) or [("-", 0)])
    lines += _section("script (the person)", sorted(script.items()))
    lines += _section("budgets", sorted(budgets.items()))
    lines += _section("requests retried (not anomalies)", sorted(retries.items()) or [("-", 0)])
    lines += _section("anomalies by kind", sorted(by_kind.items()) or [("-", 0)])
    lines.append("-" * (WIDTH + 9))
    lines.append(f"anomalies: {len(anomalies)}")
    return "\n".join(lines)


def details(anomalies: list[Anomaly]) -> str:
    """One line per anomaly: its kind, run and what was seen."""
    return "\n".join(f"ANOMALY {a.kind}: run {a.run_id}: {a.detail}" for a in anomalies)
