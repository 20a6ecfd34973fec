"""Roles in order, which hosts count as loopback, the token bucket, and what the start-up
line says about authentication."""

from __future__ import annotations

import pytest

from agent_engine.access_errors import RateLimitedError
from agent_engine.cli.startup import describe_auth
from agent_engine.config import Settings, host_is_loopback
from agent_engine.domain.principals import Principal, Role, unauthenticated_principal
from agent_engine.engine.key_limits import RateLimiter
from agent_engine.engine.keys import split_token


def test_roles_are_ordered_by_what_they_may_do_not_by_spelling() -> None:
    assert sorted([Role.ADMIN, Role.VIEWER, Role.APPROVER, Role.OPERATOR]) == [
        Role.VIEWER,
        Role.OPERATOR,
        Role.APPROVER,
        Role.ADMIN,
    ]
    assert Role.ADMIN > Role.APPROVER > Role.OPERATOR > Role.VIEWER
    assert Role.APPROVER.below() == [Role.VIEWER, Role.OPERATOR]
    assert Principal("a", Role.APPROVER).has(Role.OPERATOR)
    assert not Principal("a", Role.OPERATOR).has(Role.APPROVER)


def test_without_auth_the_actor_is_admin_but_may_not_skip_a_person() -> None:
    assert unauthenticated_principal(None) == Principal("anonymous", Role.ADMIN, None, False)
    assert unauthenticated_principal("dana").name == "dana"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert host_is_loopback(host) is loopback
    if host:
        settings = Settings(host=host, _env_file=None)  # type: ignore[call-arg]
        assert settings.auth_enforced is not loopback


def test_auth_required_turns_auth_on_even_on_loopback() -> None:
    settings = Settings(auth_required=True, _env_file=None)  # type: ignore[call-arg]
    assert settings.auth_enforced
    assert describe_auth(settings) == (
        "auth on (AGENT_ENGINE_AUTH_REQUIRED): API keys required, X-Actor ignored"
    )
    off = Settings(_env_file=None)  # type: ignore[call-arg]
    assert describe_auth(off) == "auth off: loopback only; X-Actor honoured"


def test_the_token_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_s=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.take("k")
    with pytest.raises(RateLimitedError) as refused:
        limiter.take("k")
    assert refused.value.headers() == {"Retry-After": "1"}
    limiter.take("other")  # each name has its own bucket
    now[0] = 0.5  # one token back at 2 per second
    limiter.take("k")
    with pytest.raises(RateLimitedError):
        limiter.take("k")


@pytest.mark.parametrize(
    ("token", "parts"),
    [
        ("ae_0123456789ab_se_cr-et", ("0123456789ab", "se_cr-et")),
        ("ae_0123456789ab_", None),
        ("xx_0123456789ab_secret", None),
        ("ae_0123_secret", None),
        ("ae_0123456789AB_secret", None),
        ("", None),
    ],
)
def test_key_tokens_split_into_prefix_and_secret(token: str, parts: tuple[str, str] | None) -> None:
    assert split_token(token) == parts
