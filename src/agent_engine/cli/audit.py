"""``agent-engine audit``: verify runs' audit chains (in the database or a bundle, offline),
export and import bundles, make a signing key."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from rich.console import Console

from agent_engine.domain.audit_signing import key_id, private_key_pem, public_key_pem
from agent_engine.errors import EngineError

if TYPE_CHECKING:  # the engine is imported by the commands that use it: `--help` stays quick
    from agent_engine.engine.context import EngineContext

audit_app = typer.Typer(help="Verify, export and import runs' audit chains.", no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)
CLI_ACTOR = "cli"
T = TypeVar("T")


def _fail(message: str, code: int = 1) -> None:
    from agent_engine.cli.main import fail  # cli.main imports this module

    fail(message, code)


def _with_engine(action: Callable[[EngineContext], Awaitable[T]]) -> T:
    """Run ``action`` with an engine on the settings' database (migrated first, as `serve`
    does); an engine error is one ``error:`` line."""
    from agent_engine.cli.main import fail, prepared_settings
    from agent_engine.engine.context import build_context

    settings = prepared_settings()

    async def run() -> T:
        ctx = build_context(settings)
        try:
            return await action(ctx)
        finally:
            await ctx.close()

    try:
        return asyncio.run(run())
    except EngineError as exc:
        fail(exc.detail)


def _public_key(path: Path | None) -> Ed25519PublicKey | None:
    if path is None:
        return None
    from agent_engine.engine.audit_keys import public_key_file

    try:
        return public_key_file(path)
    except EngineError as exc:
        _fail(exc.detail, 2)
    return None  # not reached: _fail exits


def verdict_line(verdict: dict[str, Any]) -> str:
    """One line for a verdict: ``ok`` with the event count and signature, or the first break."""
    run = verdict.get("run_id") or "bundle"
    if verdict["valid"]:
        pruned = len(verdict.get("pruned") or ())
        kept = f", {pruned} payloads pruned (their hashes kept)" if pruned else ""
        return f"ok: run {run}: {verdict['events']} events, signature {verdict['signature']}{kept}"
    place = verdict["first_broken"]
    where = f"seq {place['seq']}" if place.get("seq") is not None else "no event"
    if place.get("step_number") is not None:
        where += f", step {place['step_number']}"
    return f"error: run {run}: {place['kind']} at {where}: {place['detail']}"


def _report(verdicts: list[dict[str, Any]]) -> None:
    for verdict in verdicts:
        out.print(verdict_line(verdict))
    if not all(v["valid"] for v in verdicts):
        raise typer.Exit(1)


def _read_bundle(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}", 2)
    except ValueError as exc:
        out.print(f"error: {path}: bundle_invalid: not JSON: {exc}")
        raise typer.Exit(1) from exc


@audit_app.command("verify")
def verify(
    run_id: Annotated[str | None, typer.Argument(help="The run to verify")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Verify every run")] = False,
    bundle: Annotated[
        Path | None, typer.Option(help="Verify an exported bundle offline (no database)")
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="Ed25519 public key to check signatures with "
            "[env: AGENT_ENGINE_AUDIT_VERIFY_KEY_FILE for the database]"
        ),
    ] = None,
) -> None:
    """Recompute audit chains and every row they cover; exit 1 naming the first broken link."""
    if bundle is not None:
        from agent_engine.engine.bundles import verify_bundle

        if run_id is not None or all_runs:
            _fail("--bundle verifies the bundle's run: give no RUN_ID and no --all", 2)
        _report([verify_bundle(_read_bundle(bundle), _public_key(public_key))])
        return
    if (run_id is None) == (not all_runs):
        _fail("give a RUN_ID, --all or --bundle FILE", 2)
    key = _public_key(public_key)
    from agent_engine.engine.audit_checks import verify_all_chains, verify_run_chain

    if all_runs:
        _report(_with_engine(lambda ctx: verify_all_chains(ctx, public_key=key)))
    else:
        assert run_id is not None
        _report([_with_engine(lambda ctx: verify_run_chain(ctx, run_id, public_key=key))])


@audit_app.command("export")
def export(
    run_id: Annotated[str, typer.Argument(help="The run to export")],
    out_file: Annotated[Path, typer.Option("--out", help="The bundle file to write")],
) -> None:
    """Write the run as one self-contained bundle (JSON)."""
    from agent_engine.engine.bundles import export_bundle

    bundle = _with_engine(lambda ctx: export_bundle(ctx, run_id))
    try:
        out_file.write_text(json.dumps(bundle, ensure_ascii=False, indent=1), encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {out_file}: {exc.strerror}", 2)
    out.print(f"exported run {run_id} to {out_file}")


@audit_app.command("import")
def import_(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by `audit export`")],
    public_key: Annotated[
        Path | None, typer.Option(help="Also check the head's signature with this key")
    ] = None,
) -> None:
    """Verify a bundle and load its run, rows unchanged (exit 1 if it does not verify)."""
    from agent_engine.engine.bundles import import_bundle

    document = _read_bundle(bundle)
    key = _public_key(public_key)
    verdict = _with_engine(
        lambda ctx: import_bundle(ctx, document, actor=CLI_ACTOR, public_key=key)
    )
    out.print(f"imported run {verdict['run_id']}: {verdict['events']} events")


@audit_app.command("keygen")
def keygen(
    out_file: Annotated[Path, typer.Option("--out", help="The private key file to create")],
) -> None:
    """Make an Ed25519 signing key (PEM, mode 0600) and its public key beside it (FILE.pub)."""
    key = Ed25519PrivateKey.generate()
    public_file = out_file.with_name(out_file.name + ".pub")
    try:
        descriptor = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private_key_pem(key))
        public_file.write_bytes(public_key_pem(key.public_key()))
    except FileExistsError:
        _fail(f"{out_file} exists: a signing key is never overwritten", 2)
    except OSError as exc:
        _fail(f"cannot write {out_file}: {exc.strerror}", 2)
    out.print(f"wrote {out_file} (private: AGENT_ENGINE_AUDIT_SIGNING_KEY_FILE) and {public_file}")
    out.print(f"key id {key_id(key.public_key())}")
