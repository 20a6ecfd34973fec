"""Counting the SQL the engine issues, attributed to the phase of the step cycle that issued it.

A ``before_cursor_execute`` listener on the engine's sync engine counts every statement sent to the
driver; a context variable names the phase. The worker's claim round and heartbeats are tagged by a
:class:`ProfiledWorker` subclass, executing and recording by wrapping the two stepping functions
the worker calls (for the duration of :func:`attributed_phases` only). ``BEGIN``/``COMMIT`` that
the driver issues itself (asyncpg) are not cursor executions: they are counted as transactions.
The wall time spent in each tagged phase is summed too. Every write (one function call per batch
of change sets on PostgreSQL) goes through SQLAlchemy's cursor and is counted like any statement.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_engine.worker import worker as worker_module
from agent_engine.worker.worker import Worker

PHASES = ("create", "claim", "execute", "record", "heartbeat", "other")
PHASE: ContextVar[str] = ContextVar("bench_phase", default="other")
SHAPE_CHARS = 80
_SPACES = re.compile(r"\s+")


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Attribute the statements issued inside the block to ``name``."""
    token = PHASE.set(name)
    try:
        yield
    finally:
        PHASE.reset(token)


def statement_shape(statement: str) -> str:
    """The statement's first characters with whitespace collapsed (its "shape")."""
    return _SPACES.sub(" ", statement).strip()[:SHAPE_CHARS]


@dataclass
class StatementProfile:
    """Statements and transactions per phase, and statements per (phase, shape)."""

    statements: Counter[str] = field(default_factory=Counter)
    transactions: Counter[str] = field(default_factory=Counter)
    shapes: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)

    active: bool = False

    def _on_execute(
        self,
        _conn: Any,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        if not self.active:
            return
        name = PHASE.get()
        self.statements[name] += 1
        shape = statement_shape(statement)
        self.shapes[(name, f"{shape} [executemany]" if executemany else shape)] += 1

    def _on_begin(self, _conn: Any) -> None:
        if self.active:
            self.transactions[PHASE.get()] += 1

    @classmethod
    def combined(cls, profiles: list[StatementProfile]) -> StatementProfile:
        merged = cls()
        for profile in profiles:
            merged.statements.update(profile.statements)
            merged.transactions.update(profile.transactions)
            merged.shapes.update(profile.shapes)
            for name, seconds in profile.seconds.items():
                merged.seconds[name] = merged.seconds.get(name, 0.0) + seconds
        return merged

    def count_call(self, statement: str) -> None:
        """A statement sent outside SQLAlchemy (the hot path's one call): one statement, and one
        transaction of its own."""
        if not self.active:
            return
        name = PHASE.get()
        self.statements[name] += 1
        self.transactions[name] += 1
        self.shapes[(name, statement_shape(statement))] += 1

    @contextmanager
    def listening(self, engine: AsyncEngine, *more: Engine | None) -> Iterator[StatementProfile]:
        """Listen to ``engine`` (and ``more``: the SQLite writer's blocking engine) during the
        block; enter it before any connection is in use (SQLAlchemy refuses listeners added
        while its event is being dispatched)."""
        engines = [engine.sync_engine, *(other for other in more if other is not None)]
        for sync_engine in engines:
            event.listen(sync_engine, "before_cursor_execute", self._on_execute)
            event.listen(sync_engine, "begin", self._on_begin)
        try:
            yield self
        finally:
            for sync_engine in engines:
                event.remove(sync_engine, "before_cursor_execute", self._on_execute)
                event.remove(sync_engine, "begin", self._on_begin)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Attribute the block's statements and its wall time to phase ``name``."""
        started = time.perf_counter()
        with phase(name):
            try:
                yield
            finally:
                if self.active:
                    elapsed = time.perf_counter() - started
                    self.seconds[name] = self.seconds.get(name, 0.0) + elapsed

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Count the statements issued while the block runs."""
        self.active = True
        try:
            yield
        finally:
            self.active = False


class ProfiledWorker(Worker):
    """The engine's worker with its claim rounds, recordings and heartbeats tagged by phase."""

    def __init__(self, *args: Any, profile: StatementProfile, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._profile = profile

    async def _claim_round(self) -> bool:
        with self._profile.timed("claim"):
            return await super()._claim_round()

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        with phase("heartbeat"):
            await super()._heartbeat_loop(stop)

    async def _record(self, *args: Any, **kwargs: Any) -> Any:
        with self._profile.timed("record"):
            return await super()._record(*args, **kwargs)


def _tagged(
    profile: StatementProfile, name: str, original: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        with profile.timed(name):
            return await original(*args, **kwargs)

    return call


@contextmanager
def attributed_phases(profile: StatementProfile) -> Iterator[None]:
    """Tag the worker's calls of ``run_claimed`` (execute). Recording is tagged by
    :class:`ProfiledWorker`. Every write goes through SQLAlchemy's cursor, so the listener
    counts it: nothing needs counting by hand.

    A name the worker module no longer has is left alone: its statements then count under the
    phase of the task that spawned it (the claim round).
    """
    originals = {
        attribute: getattr(worker_module, attribute)
        for attribute in ("run_claimed",)
        if hasattr(worker_module, attribute)
    }
    names = {"run_claimed": "execute"}
    for attribute, original in originals.items():
        setattr(worker_module, attribute, _tagged(profile, names[attribute], original))
    try:
        yield
    finally:
        for attribute, original in originals.items():
            setattr(worker_module, attribute, original)
