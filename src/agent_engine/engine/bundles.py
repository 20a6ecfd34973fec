"""A run as one self-contained bundle: exported from one instance, verified offline without a
database, imported into another (SQLite or PostgreSQL) with its rows unchanged.

A bundle is a JSON object: ``format`` and ``version``, the run's rows as their columns (``run``,
``plans``, ``steps``, ``llm_calls``, ``approvals``, ``audit_events``), the ``blobs`` its documents
reference as ``{"$blob": hash}`` (content in base64), a ``manifest`` slot, and ``bundle_hash``,
the content hash of all the rest. Ids, times and money are text; JSON columns are JSON.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import LargeBinary, Table, Uuid, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from agent_engine.domain.audit_verify import RunRows, verify_run
from agent_engine.domain.blob_refs import (
    BLOBBED_COLUMNS,
    referenced_blobs,
    whole_rows,
)
from agent_engine.domain.canonical import content_hash
from agent_engine.domain.clock import utcnow
from agent_engine.engine.context import EngineContext
from agent_engine.engine.manifest import run_manifest
from agent_engine.errors import AuditVerificationError, ConflictError, InputValidationError
from agent_engine.storage.audit import load_run_rows_txn
from agent_engine.storage.blobs import store_blobs_txn
from agent_engine.storage.database import read_transaction, transaction
from agent_engine.storage.runs import get_run_txn
from agent_engine.storage.tables import Base, Blob
from agent_engine.storage.types import Money, UTCDateTime

FORMAT = "agent-engine-run-bundle"
# 2: the model calls' requests and responses may reference blobs too (1: only steps' documents),
# and ``llm_calls`` rows have ``payloads_pruned_at``. 3: so may steps' planned inputs and
# previews, plan versions' documents, what approvals showed and audit events' payloads. All
# three are read.
VERSION = 3
READABLE = (1, 2, 3)
# Bundle key → table, in the order rows are inserted (foreign keys first).
SECTIONS = (
    ("run", "agent_runs"),
    ("steps", "steps"),
    ("llm_calls", "llm_calls"),
    ("plans", "plans"),
    ("approvals", "approvals"),
    ("audit_events", "audit_events"),
)
# Columns an importing instance gives its own values (none is covered by the audit chain).
LOCAL_EVENT_COLUMNS = ("id", "xact_id")


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def to_json(value: Any) -> Any:
    """A column value as a bundle holds it."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    return {name: to_json(value) for name, value in row.items()}


def seal(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle with its ``bundle_hash`` (of everything else in it)."""
    body = {key: value for key, value in bundle.items() if key != "bundle_hash"}
    return {**body, "bundle_hash": content_hash(body)}


async def export_bundle(ctx: EngineContext, run_id: str) -> dict[str, Any]:
    """The run's bundle (NotFoundError for an unknown run)."""
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        rows = await load_run_rows_txn(session, run.id)
        assert rows is not None  # just read
        # Documents are stored with blob references (storage/blobs.py): the bundle carries
        # them as stored, beside the blobs they reference.
        documents = [
            [row.get(column) for column in columns]
            for table, columns in BLOBBED_COLUMNS.items()
            for row in rows.of(table)
        ]
        wanted = referenced_blobs(documents)
        blob_rows: list[dict[str, Any]] = []
        if wanted:
            query = select(_table("blobs")).where(Blob.hash.in_(wanted))
            blob_rows = [dict(blob) for blob in (await session.execute(query)).mappings()]
    bundle: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": utcnow().isoformat(),
        "run": _row_json(dict(rows.run)),
        "plans": [_row_json(dict(row)) for row in rows.plans],
        "steps": [_row_json(dict(row)) for row in rows.steps],
        "llm_calls": [_row_json(dict(row)) for row in rows.llm_calls],
        "approvals": [_row_json(dict(row)) for row in rows.approvals],
        "audit_events": [_row_json(dict(row)) for row in rows.events],
        "blobs": [_row_json(blob) for blob in blob_rows],
        # What the run depended on (engine, executors, models, prices, tools), as of the export.
        "manifest": await run_manifest(ctx, run_id),
    }
    return seal(bundle)


def _shape_problem(bundle: Any) -> str | None:
    if not isinstance(bundle, dict):
        return "a bundle is a JSON object"
    if bundle.get("format") != FORMAT or bundle.get("version") not in READABLE:
        return f"not a {FORMAT} of version {' or '.join(str(v) for v in READABLE)}"
    if not isinstance(bundle.get("run"), dict) or "id" not in bundle["run"]:
        return "the bundle has no run"
    for key, _ in SECTIONS[1:]:
        section = bundle.get(key)
        if not isinstance(section, list) or not all(isinstance(row, dict) for row in section):
            return f"the bundle's {key} is not a list of rows"
    if not isinstance(bundle.get("blobs", []), list):
        return "the bundle's blobs is not a list"
    return None


def _blob_problem(bundle: dict[str, Any]) -> dict[str, Any] | None:
    for blob in bundle.get("blobs", []):
        try:
            content = base64.b64decode(blob["content"], validate=True)
        except (KeyError, TypeError, ValueError):
            return {"seq": None, "kind": "blob_changed", "detail": "a blob has no valid content"}
        if hashlib.sha256(content).hexdigest() != blob.get("hash"):
            return {
                "seq": None,
                "kind": "blob_changed",
                "blob": blob.get("hash"),
                "detail": f"blob {blob.get('hash')}: its content hashes differently",
            }
    return None


def _blob_texts(bundle: dict[str, Any]) -> dict[str, str]:
    """The bundle's blobs as text, by hash (their content is checked by ``_blob_problem``)."""
    texts: dict[str, str] = {}
    for blob in bundle.get("blobs", []):
        texts[str(blob["hash"])] = base64.b64decode(blob["content"]).decode("utf-8")
    return texts


def verify_bundle(bundle: Any, public_key: Ed25519PublicKey | None = None) -> dict[str, Any]:
    """The verdict on a bundle, offline: its shape, the run's chain and every covered row
    (``domain/audit_verify.py``), its blobs, then the bundle hash (values no event covers)."""
    problem = _shape_problem(bundle)
    if problem is not None:
        broken = {"seq": None, "kind": "bundle_invalid", "detail": problem}
        return {
            "run_id": None,
            "valid": False,
            "events": 0,
            "first_broken": broken,
            "signature": "missing",
        }
    try:
        texts = _blob_texts(bundle)
        rows = RunRows(
            run=bundle["run"],
            steps=whole_rows(bundle["steps"], BLOBBED_COLUMNS["steps"], texts),
            llm_calls=whole_rows(bundle["llm_calls"], BLOBBED_COLUMNS["llm_calls"], texts),
            approvals=whole_rows(bundle["approvals"], BLOBBED_COLUMNS["approvals"], texts),
            plans=whole_rows(bundle["plans"], BLOBBED_COLUMNS["plans"], texts),
            events=sorted(
                whole_rows(bundle["audit_events"], BLOBBED_COLUMNS["audit_events"], texts),
                key=lambda e: int(e.get("seq", 0)),
            ),
        )
        verdict = verify_run(rows, public_key)
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        # LookupError: a missing key, or a blob a document references that the bundle lacks.
        broken = {"seq": None, "kind": "bundle_invalid", "detail": f"a row is malformed: {exc!r}"}
        return {
            "run_id": str(bundle["run"]["id"]),
            "valid": False,
            "events": len(bundle["audit_events"]),
            "first_broken": broken,
            "signature": "missing",
        }
    if verdict["valid"]:
        extra = _blob_problem(bundle)
        if extra is None and seal(bundle)["bundle_hash"] != bundle.get("bundle_hash"):
            extra = {
                "seq": None,
                "kind": "bundle_changed",
                "detail": "the bundle's content no longer matches its bundle_hash (a value no "
                "audit event covers changed)",
            }
        if extra is not None:
            verdict = {**verdict, "valid": False, "first_broken": extra}
    return verdict


def _from_json(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """A bundle row as values for ``table``'s columns (unknown keys refused)."""
    values: dict[str, Any] = {}
    for name, value in row.items():
        if name not in table.c:
            raise InputValidationError(f"bundle: {table.name} has no column {name!r}")
        column_type = table.c[name].type
        if value is None:
            values[name] = None
        elif isinstance(column_type, Uuid):
            values[name] = uuid.UUID(str(value))
        elif isinstance(column_type, UTCDateTime):
            values[name] = datetime.fromisoformat(value)
        elif isinstance(column_type, Money):
            values[name] = Decimal(str(value))
        elif isinstance(column_type, LargeBinary):
            values[name] = base64.b64decode(value)
        else:
            values[name] = value
    return values


def _imported_run(run: dict[str, Any], actor: str) -> dict[str, Any]:
    """The run row as this instance keeps it: marked imported (metadata, which no event covers),
    never handed to a worker, its idempotency key left behind with its first instance."""
    metadata = dict(cast(dict[str, Any], run.get("metadata") or {}))
    metadata["imported"] = {"at": utcnow().isoformat(), "by": actor}
    return {
        **run,
        "metadata": metadata,
        "idempotency_key": None,
        "started": False,
        "claimable_at": None,
    }


async def import_bundle(
    ctx: EngineContext, bundle: Any, *, actor: str, public_key: Ed25519PublicKey | None = None
) -> dict[str, Any]:
    """Verify ``bundle`` and insert its rows unchanged (ids kept), so its chain verifies here
    too; AuditVerificationError (422) names the first broken link, ConflictError (409) a run
    that exists already. The verdict is returned."""
    verdict = verify_bundle(bundle, public_key)
    if not verdict["valid"]:
        place = verdict["first_broken"]
        raise AuditVerificationError(
            f"the bundle does not verify: {place['kind']} at seq {place['seq']}: {place['detail']}",
            first_broken=place,
        )
    run_id = uuid.UUID(str(bundle["run"]["id"]))
    try:
        await _insert(ctx, bundle, run_id, actor)
    except IntegrityError as exc:
        raise ConflictError(
            "a row of the bundle (a step, call, approval or plan id) exists on this instance",
            run_id=str(run_id),
        ) from exc
    except DBAPIError as exc:
        raise InputValidationError("the bundle's rows do not fit this instance's columns") from exc
    except (ValueError, TypeError) as exc:
        raise InputValidationError(f"the bundle's rows cannot be stored: {exc}") from exc
    return verdict


async def _insert(
    ctx: EngineContext, bundle: dict[str, Any], run_id: uuid.UUID, actor: str
) -> None:
    async with transaction(ctx.sessions) as session:
        exists = await session.scalar(
            select(_table("agent_runs").c.id).where(_table("agent_runs").c.id == run_id)
        )
        if exists is not None:
            raise ConflictError(f"run {run_id} exists on this instance already", run_id=str(run_id))
        for key, table_name in SECTIONS:
            table = _table(table_name)
            section = [bundle[key]] if key == "run" else bundle[key]
            rows = [_from_json(table, row) for row in section]
            if key == "run":
                rows = [_imported_run(rows[0], actor)]
            if key == "audit_events":
                rows = [
                    {k: v for k, v in row.items() if k not in LOCAL_EVENT_COLUMNS} for row in rows
                ]
            if rows:
                await session.execute(insert(table), rows)
        # Stored now (a blob already here is kept, written anew): the blob collection's grace
        # period counts from this import, not from the original's write.
        now = utcnow()
        blobs = [
            {**_from_json(_table("blobs"), blob), "created_at": now}
            for blob in bundle.get("blobs", [])
        ]
        await store_blobs_txn(session, blobs)
