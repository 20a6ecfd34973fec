"""``/v1/api-keys``: an admin makes, lists and revokes API keys (a new key is shown once)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from agent_engine.api.access import requires
from agent_engine.api.deps import Actor, Gate
from agent_engine.domain.principals import Role
from agent_engine.engine.keys import KeyInfo

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Unique; the actor in the audit")
    role: Role
    may_auto_approve: bool = Field(
        default=False,
        description="May set rules that let steps run without a person (admin keys always may)",
    )


class KeyOut(BaseModel):
    name: str
    role: Role
    prefix: str
    may_auto_approve: bool
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None

    @classmethod
    def of(cls, info: KeyInfo) -> KeyOut:
        return cls(**info.__dict__)


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash")


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=NewKeyOut, **requires(Role.ADMIN)
)
async def create_key(body: KeyIn, guard: Gate, actor: Actor) -> NewKeyOut:
    """Make a key; 409 `api_key_name_taken` if the name was ever used."""
    made = await guard.keys.create(
        name=body.name, role=body.role, may_auto_approve=body.may_auto_approve, created_by=actor
    )
    return NewKeyOut(**KeyOut.of(made.info).model_dump(), key=made.token)


@router.get("", response_model=list[KeyOut], **requires(Role.ADMIN))
async def list_keys(guard: Gate) -> list[KeyOut]:
    """Every key, revoked ones too (never their secrets)."""
    return [KeyOut.of(info) for info in await guard.keys.list_keys()]


@router.delete("/{name}", response_model=KeyOut, **requires(Role.ADMIN))
async def revoke_key(name: str, guard: Gate, actor: Actor) -> KeyOut:
    """Revoke a key: refused at once by this process, by the others within the key cache's
    TTL; 404 if unknown, 409 if already revoked."""
    return KeyOut.of(await guard.keys.revoke(name, actor=actor))
