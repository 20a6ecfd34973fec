"""Third-party executors register through the ``agent_engine.executors`` entry point group,
exactly like the built-ins, and run through the API."""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_engine.api.app import create_app
from agent_engine.config import Settings
from agent_engine.executors.registry import load_registry

PLUGIN = Path(__file__).resolve().parents[1] / "fixtures" / "plugin_demo"


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Install the plugin the way an installer lays it out: the module plus its dist-info
    (METADATA and entry_points.txt) in a site directory on sys.path."""
    site = tmp_path / "site-packages"
    dist_info = site / "agent_engine_plugin_demo-0.1.0.dist-info"
    dist_info.mkdir(parents=True)
    shutil.copy(PLUGIN / "agent_engine_plugin_demo.py", site)
    shutil.copy(PLUGIN / "METADATA", dist_info)
    shutil.copy(PLUGIN / "entry_points.txt", dist_info)
    (dist_info / "RECORD").write_text("")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("agent_engine_plugin_demo", None)


def test_registry_loads_builtins_and_the_plugin(installed_plugin: Path) -> None:
    registry = load_registry()
    assert {"read_file", "list_files", "edit_file", "run_command", "analyze", "summarize"} <= set(
        registry
    )
    assert registry["shout"].name == "shout"


def test_without_the_plugin_its_step_type_is_unknown() -> None:
    assert "shout" not in load_registry()


async def test_plugin_step_runs_through_the_api(installed_plugin: Path, settings: Settings) -> None:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        bad = await client.post(
            "/v1/agent-runs",
            json={"goal": "g", "steps": [{"step_type": "shout", "input_data": {"txt": "x"}}]},
        )
        assert bad.status_code == 422
        assert {e["field"] for e in bad.json()["errors"]} == {"text", "txt"}
        steps = [{"step_type": "shout", "input_data": {"text": "hello"}}]
        run = (await client.post("/v1/agent-runs", json={"goal": "g", "steps": steps})).json()
        done = (await client.post(f"/v1/agent-runs/{run['id']}/execute")).json()
    assert done["status"] == "completed"
    assert done["steps"][0]["output_data"] == {"text": "HELLO!"}


def test_duplicate_executor_names_are_refused_at_start_up() -> None:
    from agent_engine.executors.noop import NOOP
    from agent_engine.executors.registry import ExecutorRegistry

    with pytest.raises(ValueError, match="two executors are named 'noop'"):
        ExecutorRegistry([NOOP, NOOP])
