"""The deployment files (deploy/compose.yaml, the worker's systemd unit, the Dockerfile) name
only settings that exist, hold no secret, and have the services and health checks they promise.
(CI also runs `docker compose config` on it, or Debian's docker-compose where the compose
plugin is missing; these checks need only PyYAML.)"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_engine.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
UNIT = ROOT / "deploy" / "agent-engine-worker.service"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
SETTING = re.compile(r"\bAGENT_ENGINE_[A-Z0-9_]+")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE", re.IGNORECASE)
# A value that is a secret itself, not a reference to one: a provider key, or a URL's password.
SECRET_VALUE = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}|://[^:/@\s]+:(?!\$\{)[^@\s]+@")
REFERENCE = re.compile(r"^\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}$")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def pairs(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every scalar of a YAML tree with the key it is under."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield str(name), str(name)
            yield from pairs(value, str(name))
    elif isinstance(node, list):
        for item in node:
            yield from pairs(item, key)
    elif node is not None:
        yield key, str(node)


def unknown_settings(text: str) -> set[str]:
    names = {name.removeprefix("AGENT_ENGINE_").lower() for name in SETTING.findall(text)}
    return {name for name in names if name not in Settings.model_fields}


def test_compose_runs_postgres_the_api_two_workers_and_the_router_each_health_checked() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "api", "worker", "router"}
    assert services["worker"]["deploy"]["replicas"] == 2
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["router"]["command"][:2] == ["router", "serve"]
    assert services["worker"]["command"] == ["worker"]
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"
    environment = services["api"]["environment"]
    assert environment["AGENT_ENGINE_ROUTER_URL"] == "http://router:8100"
    assert environment["AGENT_ENGINE_EMBEDDED_WORKER"] == "false"
    assert environment["AGENT_ENGINE_DATABASE_URL"].startswith("postgresql+asyncpg://")


def test_compose_holds_no_secret_only_references_to_the_env_file() -> None:
    assert {service.get("env_file") for service in compose()["services"].values()} >= {".env"}
    for key, value in pairs(compose()):
        assert not SECRET_VALUE.search(value), (key, value)
        if SECRET_NAME.search(key) and value != key:
            assert REFERENCE.match(value), f"{key} holds a value, not a reference: {value!r}"


def test_the_project_name_is_in_the_env_file_not_a_top_level_name() -> None:
    # Compose v1 (what CI validates with when the v2 plugin is missing) refuses a top-level
    # ``name``; both versions read COMPOSE_PROJECT_NAME from the project's .env.
    assert "name" not in compose()
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    assert "COMPOSE_PROJECT_NAME=agent-engine" in lines


@pytest.mark.parametrize("path", [COMPOSE, UNIT, DOCKERFILE], ids=lambda p: p.name)
def test_every_setting_a_deployment_file_names_exists(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert SETTING.search(text), "the file names no setting: is the pattern right?"
    assert unknown_settings(text) == set()


def test_the_worker_unit_runs_a_worker_with_its_secrets_in_an_environment_file() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text(encoding="utf-8"))
    service = unit["Service"]
    assert service["ExecStart"].endswith("agent-engine worker")
    assert service["EnvironmentFile"].startswith("/etc/agent-engine/")
    assert service["User"] != "root" and service["KillSignal"] == "SIGTERM"
    assert not SECRET_VALUE.search(UNIT.read_text(encoding="utf-8"))


def test_the_dockerfile_installs_the_lock_and_serves_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "--requirement requirements/base.lock" in text
    assert "--no-deps ." in text  # the package itself adds no unlocked dependency
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r'^ENTRYPOINT \["agent-engine"\]\s*\nCMD \["serve"\]', text, re.MULTILINE)
