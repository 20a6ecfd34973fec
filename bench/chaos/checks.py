"""The invariants checked once the chaos has stopped and the runs have settled. Each broken one
is an :class:`Anomaly` (its kind, the run, what was seen); retried requests are not anomalies.

- every run is finished or waits for a person (on an effect whose outcome is unknown);
- no effect applied twice: each edit's file by its hash, each command's line in its counter
  file, each tool call's line in the MCP server's own log;
- every audit chain verifies and has no gap (seqs 1..n, n = the run's ``audit_seq``);
- no budget ever passed and a run's totals are the sums of its calls (budget_checks.py);
- no run failed by a fault: only a person's rejection fails one;
- every replay of a completed run completed and matches it step for step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chaos.client import ChaosClient
from bench.chaos.plans import BASE, Effect, Tracked, sha256
from bench.chaos.workload import TERMINAL, waiting_on_unknown


@dataclass(frozen=True)
class Anomaly:
    kind: str
    run_id: str
    detail: str


def _lines(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(path.read_text(encoding="utf-8").splitlines())


def _effect_anomaly(effect: Effect, step: dict[str, Any], tool_log: Counter[str]) -> str | None:
    done = step["status"] == "completed"
    if effect.kind == "edit":
        assert effect.path is not None
        content = effect.path.read_text(encoding="utf-8")
        applied = f"{BASE}{effect.marker}\n"
        if sha256(content) == sha256(applied):
            return None if step["status"] not in {"pending", "rejected"} else "edit not asked for"
        if sha256(content) == sha256(BASE) and not done:
            return None
        return f"{effect.path.name} is {content!r} (step {step['status']}); expected {applied!r}"
    if effect.kind == "command":
        assert effect.path is not None
        seen = _lines(effect.path)[effect.marker]
    else:
        seen = tool_log[effect.marker]
    if seen > 1 and not effect.idempotent:
        return f"applied {seen} times (step {step['status']})"
    if done and seen == 0:
        return "step completed but its effect is missing"
    return None


def check_effects(
    tracked: list[Tracked], runs: dict[str, dict[str, Any]], tool_log_path: Path
) -> list[Anomaly]:
    """Each expected effect applied at most once (exactly once where its step completed)."""
    tool_log = _lines(tool_log_path)
    found = []
    for run in tracked:
        steps = {s["step_number"]: s for s in runs[run.run_id]["steps"]}
        for effect in run.effects:
            problem = _effect_anomaly(effect, steps[effect.step_number], tool_log)
            if problem:
                found.append(
                    Anomaly(
                        f"{effect.kind} effect", run.run_id, f"step {effect.step_number}: {problem}"
                    )
                )
    return found


REJECTED = "rejected by the script"


def failure_cause(run: dict[str, Any]) -> str:
    """Why a failed run failed: a person's rejection, else its failing step's error code."""
    if any(step["status"] == "rejected" for step in run["steps"]):
        return REJECTED
    for step in run["steps"]:
        if step["status"] == "failed" and step.get("error"):
            return str(step["error"].get("code", "?"))
    return str((run.get("error") or {}).get("code", "?"))


def check_failures(runs: dict[str, dict[str, Any]]) -> list[Anomaly]:
    """A run failed by anything but a person's rejection: a fault became a failure (every step
    of the workload succeeds when nothing goes wrong; a fault must cost time, not the run)."""
    return [
        Anomaly("run failed by a fault", run_id, failure_cause(run))
        for run_id, run in runs.items()
        if run["status"] == "failed"
        and failure_cause(run) != REJECTED
        and not run.get("replay_of")  # a replay's failure is check_replays' to report
    ]


def check_settled(runs: dict[str, dict[str, Any]]) -> list[Anomaly]:
    """Every run finished or waits for a person on an unknown outcome."""
    return [
        Anomaly("run not settled", run_id, f"status {run['status']}")
        for run_id, run in runs.items()
        if run["status"] not in TERMINAL and not waiting_on_unknown(run)
    ]


async def check_audit(client: ChaosClient, runs: dict[str, dict[str, Any]]) -> list[Anomaly]:
    """Every chain verifies, and its events are numbered 1..audit_seq without a gap."""
    found = []
    for run_id, run in runs.items():
        verdict = await client.get(f"/v1/agent-runs/{run_id}/audit/verify")
        if not verdict["valid"]:
            found.append(Anomaly("audit chain broken", run_id, str(verdict["first_broken"])))
        log = await client.get(f"/v1/agent-runs/{run_id}/audit", limit=10_000)
        seqs = [event["seq"] for event in log["events"]]
        if seqs != list(range(1, run["audit_seq"] + 1)):
            detail = f"{len(seqs)} events, audit_seq {run['audit_seq']}"
            found.append(Anomaly("audit gap", run_id, detail))
    return found


async def check_replays(
    client: ChaosClient, tracked: list[Tracked], runs: dict[str, dict[str, Any]]
) -> list[Anomaly]:
    """Each replay (all are of completed runs) completed, and matches its original."""
    found = []
    for replay in (t for t in tracked if t.kind == "replay"):
        status = runs[replay.run_id]["status"]
        if status != "completed":
            error = runs[replay.run_id].get("error") or next(
                (s["error"] for s in runs[replay.run_id]["steps"] if s.get("error")), None
            )
            found.append(Anomaly("replay not completed", replay.run_id, f"{status}: {error}"))
            continue
        report = await client.get(f"/v1/agent-runs/{replay.run_id}/divergence")
        if report["verdict"] != "match":
            steps = [s for s in report.get("steps", []) if s.get("verdict") != "match"]
            detail = f"of {replay.parent}: {report['verdict']}: {steps}"
            found.append(Anomaly("replay mismatch", replay.run_id, detail))
    return found
