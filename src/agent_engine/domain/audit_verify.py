"""Verifying a run's audit chain from plain rows: the same code checks the database and an
exported bundle offline.

Given a run's rows as dicts of their columns (the run, its steps, LLM calls, approvals, plan
versions and audit events, values as the database returns them or as a bundle's JSON holds them),
``verify_run`` checks, in this order, and names the first break:

1. the chain itself: seq 1, 2, 3… without a gap, each ``prev_hash`` the hash before it, each
   event's hash recomputed from its columns;
2. the chain against the run: as many events as ``agent_runs.audit_seq`` and the last one's hash
   ``agent_runs.audit_head_hash`` (a chain cut short, or a head moved, is found here);
3. every row an event covers, recomputed from the row: the run's creator, goal and workspace
   (``run.created``), each plan version's document (``plan_hash``), each step's input and output
   (``step.completed``), each approval (approver, decision, receipt, hash of what was shown) and
   each LLM call (request, response and cost); and that no such row exists uncovered;
4. the chain head's Ed25519 signature, when a public key is given.

A document retention pruned (``domain/pruned_payloads.py``) counts by the hash its marker keeps;
the verdict lists every one under ``pruned``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent_engine.domain.audit_signing import key_id, signature_holds
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.pruned_payloads import payload_hash, pruned_payloads

Row = Mapping[str, Any]


@dataclass(frozen=True)
class RunRows:
    """One run's rows, each a mapping of column name to value."""

    run: Row
    steps: Sequence[Row] = ()
    llm_calls: Sequence[Row] = ()
    approvals: Sequence[Row] = ()
    plans: Sequence[Row] = ()
    events: Sequence[Row] = ()

    def of(self, table: str) -> Sequence[Row]:
        """The rows of the table named ``table`` (``audit_events`` are ``events``)."""
        rows: Sequence[Row] = getattr(self, "events" if table == "audit_events" else table)
        return rows


class Broken(Exception):
    """The first broken link: where (seq, step), what kind, and what was found."""

    def __init__(self, kind: str, detail: str, *, seq: int | None = None, **where: Any) -> None:
        super().__init__(detail)
        self.place: dict[str, Any] = {"seq": seq, "kind": kind, **where, "detail": detail}


def _text(value: Any) -> Any:
    """A column value as a bundle's JSON holds it (ids and times as text)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _same_id(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return uuid.UUID(str(a)) == uuid.UUID(str(b))


def recompute_event_hash(event: Row) -> str:
    """An event's hash from its columns (the recipe ``domain/transitions.py`` writes with)."""
    step_id = event.get("step_id")
    return content_hash(
        {
            "run_id": str(uuid.UUID(str(event["run_id"]))),
            "seq": int(event["seq"]),
            "type": event["type"],
            "step_id": str(uuid.UUID(str(step_id))) if step_id else None,
            "payload": event["payload"],
            "actor": event["actor"],
            "created_at": _text(event["created_at"]),
            "prev_hash": event.get("prev_hash"),
        }
    )


def _check_links(rows: RunRows) -> None:
    prev_hash: str | None = None
    run_id = rows.run["id"]
    for expected, event in enumerate(rows.events, start=1):
        seq = int(event["seq"])
        if seq != expected:
            raise Broken("seq_gap", f"event seq {seq} where {expected} was expected", seq=expected)
        if not _same_id(event["run_id"], run_id):
            raise Broken("foreign_event", f"event {seq} belongs to run {event['run_id']}", seq=seq)
        if event.get("prev_hash") != prev_hash:
            raise Broken(
                "prev_hash_mismatch",
                f"event {seq} names {event.get('prev_hash')} as the hash before it, "
                f"event {seq - 1} hashes to {prev_hash}",
                seq=seq,
            )
        recomputed = recompute_event_hash(event)
        if recomputed != event["hash"]:
            raise Broken(
                "event_changed",
                f"event {seq} ({event['type']}) hashes to {recomputed}, stored {event['hash']}",
                seq=seq,
            )
        prev_hash = event["hash"]


def _check_length(rows: RunRows) -> None:
    run = rows.run
    count = len(rows.events)
    claimed = int(run.get("audit_seq") or 0)
    if count < claimed:
        raise Broken(
            "chain_truncated",
            f"the run says its chain has {claimed} events; {count} are there",
            seq=count + 1,
        )
    if count > claimed:
        raise Broken(
            "chain_length_mismatch",
            f"the run says its chain has {claimed} events; {count} are there",
            seq=claimed + 1,
        )
    head = rows.events[-1]["hash"] if rows.events else None
    if head != run.get("audit_head_hash"):
        raise Broken(
            "head_mismatch",
            f"the chain ends with {head}; the run's head is {run.get('audit_head_hash')}",
            seq=count or None,
        )


def _by_id(rows: Sequence[Row]) -> dict[uuid.UUID, Row]:
    return {uuid.UUID(str(row["id"])): row for row in rows}


def _differs(kind: str, what: str, field: str, found: Any, expected: Any, **where: Any) -> Broken:
    return Broken(kind, f"{what}: {field} is {found!r}, the audit says {expected!r}", **where)


def _check_run(rows: RunRows) -> None:
    run, first = rows.run, rows.events[0] if rows.events else None
    if first is None:
        return
    if first["type"] != "run.created":
        raise Broken("run_not_covered", "the chain does not start with run.created", seq=1)
    payload = first["payload"]
    covered = {
        "created_by": first["actor"],
        "goal": payload.get("goal"),
        "workspace": payload.get("workspace"),
        "request_hash": payload.get("request_hash"),
    }
    for field, expected in covered.items():
        if run.get(field) != expected:
            raise _differs("run_changed", "the run", field, run.get(field), expected, seq=1)


def _events_with(rows: RunRows, key: str) -> Iterator[tuple[int, Row, Any]]:
    for event in rows.events:
        value = event["payload"].get(key) if isinstance(event["payload"], dict) else None
        if value is not None:
            yield int(event["seq"]), event, value


def _check_plans(rows: RunRows) -> None:
    plans = {int(plan["version"]): plan for plan in rows.plans}
    covered: set[int] = set()
    for seq, event, plan_hash in _events_with(rows, "plan_hash"):
        if "plan" not in event["payload"]:
            continue  # names a plan (an approval of it), does not record one
        version = int(event["payload"]["version"])
        covered.add(version)
        row = plans.get(version)
        where = {"seq": seq, "plan_version": version}
        if row is None:
            raise Broken("plan_missing", f"plan version {version} is not there", **where)
        recomputed = content_hash(row["document"])
        if recomputed != plan_hash or row["plan_hash"] != plan_hash:
            raise Broken(
                "plan_changed",
                f"plan version {version}: its document hashes to {recomputed}, the row says "
                f"{row['plan_hash']}, the audit says {plan_hash}",
                **where,
            )
    for version in sorted(plans.keys() - covered):
        raise Broken(
            "plan_not_covered", f"plan version {version} is in no event", plan_version=version
        )
    current = plans.get(int(rows.run.get("plan_version") or 0))
    if current is not None and rows.run.get("plan_hash") != current["plan_hash"]:
        raise _differs(
            "run_changed", "the run", "plan_hash", rows.run.get("plan_hash"), current["plan_hash"]
        )


def _check_steps(rows: RunRows) -> None:
    steps = _by_id(rows.steps)
    covered: dict[uuid.UUID, tuple[int, Row]] = {}
    for seq, event, _ in _events_with(rows, "output_hash"):
        if event.get("step_id"):
            covered[uuid.UUID(str(event["step_id"]))] = (seq, event)  # the latest one counts
    for step_id, (seq, event) in covered.items():
        payload = event["payload"]
        step = steps.get(step_id)
        number = payload.get("step_number")
        where = {"seq": seq, "step_number": number}
        if step is None:
            raise Broken("step_missing", f"step {number} ({step_id}) is not there", **where)
        output = payload_hash(step["output_data"], payload["output_hash"])
        if output != payload["output_hash"] or step.get("output_hash") != payload["output_hash"]:
            raise Broken(
                "step_output_changed",
                f"step {number}: its output hashes to {output}, the audit says "
                f"{payload['output_hash']}",
                **where,
            )
        # A step's input hash is over its resolved input (its plan input when it had nothing
        # to resolve); the plan input itself is covered by the plan's hash.
        recorded = payload.get("input_hash")
        hashed = step["resolved_input"] if step.get("resolved_input") is not None else None
        actual = payload_hash(hashed if hashed is not None else step["input_data"], recorded)
        if recorded is not None and (actual != recorded or step.get("input_hash") != recorded):
            raise Broken("step_input_changed", f"step {number}: its input changed", **where)
        resolved = payload.get("resolved_input_hash")
        stored = step.get("resolved_input")
        if (
            resolved is not None
            and stored is not None
            and payload_hash(stored, resolved) != resolved
        ):
            raise Broken(
                "step_input_changed", f"step {number}: its resolved input changed", **where
            )
    for step_id, step in steps.items():
        if step.get("output_data") is not None and step_id not in covered:
            raise Broken(
                "step_not_covered",
                f"step {step['step_number']} has an output no event covers",
                step_number=step["step_number"],
            )


_APPROVAL_FIELDS = ("decision", "actor", "attempt", "input_hash", "shown_hash")


def _check_approvals(rows: RunRows) -> None:
    approvals = _by_id(rows.approvals)
    covered: set[uuid.UUID] = set()
    for seq, event, receipt in _events_with(rows, "approval"):
        approval_id = uuid.UUID(str(receipt["id"]))
        covered.add(approval_id)
        row = approvals.get(approval_id)
        where = {"seq": seq, "step_number": event["payload"].get("step_number")}
        if row is None:
            raise Broken("approval_missing", f"approval {approval_id} is not there", **where)
        for field in _APPROVAL_FIELDS:
            if row.get(field) != receipt.get(field):
                raise _differs(
                    "approval_changed",
                    f"approval {approval_id}",
                    field,
                    row.get(field),
                    receipt.get(field),
                    **where,
                )
        if receipt.get("actor") != event["actor"]:
            raise Broken(
                "approval_changed", f"approval {approval_id}: not its event's actor", **where
            )
        shown = payload_hash(row["shown"], receipt.get("shown_hash"))
        if shown != receipt.get("shown_hash"):
            raise Broken(
                "approval_changed",
                f"approval {approval_id}: what was shown hashes to {shown}, the audit says "
                f"{receipt.get('shown_hash')}",
                **where,
            )
    for approval_id in sorted(approvals.keys() - covered, key=str):
        raise Broken("approval_not_covered", f"approval {approval_id} is in no event")


def _same_amount(a: Any, b: Any) -> bool:
    return a is not None and b is not None and Decimal(str(a)) == Decimal(str(b))


def _call_differs(call: Row, entry: Mapping[str, Any]) -> str | None:
    response = call.get("response")
    response_hash = (
        payload_hash(response, call.get("response_hash")) if response is not None else None
    )
    cost = call.get("cost_usd")
    found = {
        "request_hash": call["request_hash"],
        "request_body_hash": payload_hash(call["request"], entry.get("request_body_hash")),
        "response_hash": response_hash,
        "cost_usd": None if cost is None else format(Decimal(str(cost)), "f"),
    }
    if call.get("response_hash") != response_hash:
        return "response_hash"
    for field, value in found.items():
        expected = entry.get(field)
        if field == "cost_usd" and _same_amount(value, expected):
            continue
        if value != expected:
            return field
    return None


def _check_calls(rows: RunRows) -> None:
    calls = _by_id(rows.llm_calls)
    covered: set[uuid.UUID] = set()
    for seq, event, entries in _events_with(rows, "llm_calls"):
        for entry in entries:
            call_id = uuid.UUID(str(entry["id"]))
            covered.add(call_id)
            call = calls.get(call_id)
            where = {"seq": seq, "step_number": event["payload"].get("step_number")}
            if call is None:
                raise Broken("llm_call_missing", f"LLM call {call_id} is not there", **where)
            field = _call_differs(call, entry)
            if field is not None:
                raise Broken(
                    "llm_call_changed", f"LLM call {call_id}: its {field} changed", **where
                )
    for call_id in sorted(calls.keys() - covered, key=str):
        raise Broken("llm_call_not_covered", f"LLM call {call_id} is in no event")


def check_signature(run: Row, public_key: Ed25519PublicKey | None) -> tuple[str, Broken | None]:
    """The signature's state (valid, missing, invalid, no_key) and, with a key, its break."""
    signature = run.get("audit_signature")
    if signature is None:
        if public_key is None:
            return "missing", None
        return "missing", Broken("signature_missing", "the chain head is not signed")
    if public_key is None:
        return "no_key", None
    if run.get("audit_key_id") not in (None, key_id(public_key)):
        return "invalid", Broken(
            "signature_invalid", f"the head was signed by key {run.get('audit_key_id')}"
        )
    holds = signature_holds(
        public_key, signature, run["id"], int(run.get("audit_seq") or 0), run.get("audit_head_hash")
    )
    if holds:
        return "valid", None
    return "invalid", Broken(
        "signature_invalid", "the signature does not match the run's chain length and head"
    )


CHECKS = (
    _check_links,
    _check_length,
    _check_run,
    _check_plans,
    _check_steps,
    _check_approvals,
    _check_calls,
)


def verify_run(rows: RunRows, public_key: Ed25519PublicKey | None = None) -> dict[str, Any]:
    """The verdict on one run's rows: ``{"valid", "events", "first_broken", "signature"}``,
    ``first_broken`` naming the first broken link (its seq, kind, step, detail) or None."""
    first: dict[str, Any] | None = None
    try:
        for check in CHECKS:
            check(rows)
    except Broken as broken:
        first = broken.place
    signature, bad_signature = check_signature(rows.run, public_key)
    if first is None and bad_signature is not None:
        first = bad_signature.place
    return {
        "run_id": str(rows.run["id"]),
        "valid": first is None,
        "events": len(rows.events),
        "first_broken": first,
        "signature": signature,
        # Documents retention replaced by markers keeping their hashes (checked as such).
        "pruned": pruned_payloads(
            {"steps": rows.steps, "llm_calls": rows.llm_calls, "approvals": rows.approvals}
        ),
    }
