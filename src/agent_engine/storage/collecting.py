"""A session that collects what state-machine code writes instead of talking to the database.

The hot path, run creation and claim rounds run the same functions as the locking path against
instances they already hold; this session keeps the rows those functions add (audit events as
plain rows) and refuses to read, so code that needs the database cannot silently take a path
that does not read it. ``RunChangeWriter`` then writes what was collected in one round trip.
"""

from __future__ import annotations

from typing import Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession


class NeedsDatabase(Exception):
    """The change needs to read the database (or write an unexpected row): take the locking path."""


class CollectingSession(AsyncSession):
    """A session for state-machine code whose rows are written by ``RunChangeWriter``: it keeps
    the instances added of the accepted classes and the audit events (as rows, see
    ``append_event_txn``), and refuses everything else (reads, flushes, other rows)."""

    def __init__(
        self, accepts: tuple[type, ...] = (), *, reads_from: AsyncSession | None = None
    ) -> None:
        super().__init__()
        self.accepts = accepts
        self.added: list[object] = []
        self.audit_rows: list[dict[str, Any]] = []
        # Reads may go to a real session in the same transaction when nothing read can be among
        # the pending changes (a claim round: it writes no outputs before it reads them).
        self._reads_from = reads_from

    def add(self, instance: object, _warn: bool = True) -> None:
        if not isinstance(instance, self.accepts):
            raise NeedsDatabase(f"adds a {type(instance).__name__}")
        self.added.append(instance)

    async def _refuse(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise NeedsDatabase("reads the database")

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        if self._reads_from is None:
            await self._refuse()
        return await self._reads_from.execute(*args, **kwargs)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        if self._reads_from is None:
            await self._refuse()
        return await self._reads_from.scalars(*args, **kwargs)

    async def flush(self, *args: Any, **kwargs: Any) -> None:
        if self._reads_from is None:
            await self._refuse()
        # Nothing collected here is in that session: there is nothing of ours to flush.

    scalar = _refuse
    get = _refuse
    refresh = _refuse
    merge = _refuse
    delete = _refuse
