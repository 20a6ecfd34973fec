"""Alert and webhook settings: thresholds checked, a URL refused without a secret, the secret
never shown; retry delays grow and spread."""

from __future__ import annotations

import base64
import random

import pytest
from pydantic import ValidationError

from agent_engine.config import Settings
from agent_engine.engine.webhooks import MAX_RETRY_S, retry_delay_s

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_thresholds_default_to_50_80_100_and_read_a_comma_list() -> None:
    assert settings().budget_alert_thresholds == [50, 80, 100]
    assert settings(budget_alert_thresholds=" 25, 90 ").budget_alert_thresholds == [25, 90]


@pytest.mark.parametrize("value", ["80,50", "0,50", "50,101", "50,50", "half"])
def test_thresholds_that_are_not_ascending_percents_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="budget_alert_thresholds"):
        settings(budget_alert_thresholds=value)


def test_a_webhook_url_without_a_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="without AGENT_ENGINE_WEBHOOK_SECRET"):
        settings(webhook_url="http://127.0.0.1:9/hook")
    assert settings(webhook_url="", webhook_secret="").webhook_url is None  # empty: unset


def test_a_bad_secret_is_refused_without_repeating_it() -> None:
    with pytest.raises(ValidationError) as refused:
        settings(webhook_url="http://127.0.0.1:9/hook", webhook_secret="whsec_c2hvcnQ=")
    assert "24 to 64 bytes" in str(refused.value)
    assert "c2hvcnQ" not in str(refused.value)


def test_the_secret_is_never_in_the_settings_repr() -> None:
    configured = settings(webhook_url="https://alerts.example/hook", webhook_secret=SECRET)
    assert SECRET not in repr(configured) and SECRET not in str(configured.model_dump())
    assert configured.webhook_secret is not None
    assert configured.webhook_secret.get_secret_value() == SECRET


def test_a_webhook_url_must_be_http() -> None:
    with pytest.raises(ValidationError, match="http:// or https://"):
        settings(webhook_url="file:///etc/passwd", webhook_secret=SECRET)


def test_retry_delays_grow_exponentially_within_their_jitter_and_stop_at_an_hour() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 30.0), (2, 60.0), (3, 120.0), (8, 3600.0), (20, 3600.0)]:
        delays = [retry_delay_s(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt
        assert len(set(delays)) > 1  # jittered: retries of many deliveries spread out
    assert retry_delay_s(100, rng) <= MAX_RETRY_S
