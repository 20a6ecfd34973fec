"""Who is acting: the roles an API key may hold, in order, and the principal of a request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a key may do; each role may do everything the roles before it may."""

    VIEWER = "viewer"  # read runs, steps, plans, audit, costs, events
    OPERATOR = "operator"  # create, start, execute, cancel, resume and retry runs
    APPROVER = "approver"  # approve and reject steps and plans
    ADMIN = "admin"  # manage keys; everything

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def includes(self, needed: Role) -> bool:
        """Whether a holder of this role may do what ``needed`` may."""
        return self.rank >= needed.rank

    def below(self) -> list[Role]:
        """The roles weaker than this one, weakest first."""
        return [role for role in Role if role.rank < self.rank]

    # Ordered by rank, not by spelling (the str comparisons would sort 'admin' first).
    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank >= other.rank


_RANKS = {role: rank for rank, role in enumerate(Role)}

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    """The caller of one request: its name (the actor in the audit log) and what it may do.

    ``key_id`` is None when authentication is off (loopback, ``X-Actor`` believed).
    ``may_auto_approve`` is the policy privilege: whether rules that let steps run without a
    person may be set by this caller (admin keys, and keys created with it).
    """

    name: str
    role: Role
    key_id: uuid.UUID | None = None
    may_auto_approve: bool = False

    def has(self, needed: Role) -> bool:
        return self.role.includes(needed)


def unauthenticated_principal(actor: str | None) -> Principal:
    """The principal when authentication is off: whoever ``X-Actor`` names, as admin, without
    the policy privilege (a name anyone can claim earns no right to skip a person)."""
    return Principal(name=actor or ANONYMOUS, role=Role.ADMIN, key_id=None, may_auto_approve=False)
