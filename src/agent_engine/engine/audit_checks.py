"""Verifying runs' audit chains in the database, with the key the settings name."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent_engine.domain.audit_verify import verify_run
from agent_engine.engine.audit_keys import load_verify_key
from agent_engine.engine.context import EngineContext
from agent_engine.storage.audit import list_run_ids_txn, load_run_rows_txn
from agent_engine.storage.database import read_transaction
from agent_engine.storage.runs import get_run_txn


def verify_key(ctx: EngineContext) -> Ed25519PublicKey | None:
    """The public key signatures are checked with (None: no key configured)."""
    return load_verify_key(ctx.settings)


async def verify_run_chain(
    ctx: EngineContext, run_id: str, *, public_key: Ed25519PublicKey | None = None
) -> dict[str, Any]:
    """Recompute one run's chain and every row it covers; the verdict names the first break
    (NotFoundError for an unknown run)."""
    key = public_key if public_key is not None else verify_key(ctx)
    async with read_transaction(ctx.sessions) as session:
        run = await get_run_txn(session, run_id)
        rows = await load_run_rows_txn(session, run.id, whole=True)
    assert rows is not None  # just read
    return verify_run(rows, key)


async def verify_all_chains(
    ctx: EngineContext, *, public_key: Ed25519PublicKey | None = None
) -> list[dict[str, Any]]:
    """The verdict on every run, oldest first (each read in its own transaction)."""
    key = public_key if public_key is not None else verify_key(ctx)
    async with read_transaction(ctx.sessions) as session:
        run_ids = await list_run_ids_txn(session)
    verdicts = []
    for run_id in run_ids:
        verdicts.append(await verify_run_chain(ctx, str(run_id), public_key=key))
    return verdicts
