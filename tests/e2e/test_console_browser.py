"""The web console in a real browser (Playwright driving Debian's Chromium) against a real
``agent-engine serve`` on loopback (SQLite, offline model): the empty state, then a run made
through the form that pauses at its edit, is approved from its page and completes.

Screenshots are kept under pytest's temporary directory; with
``AGENT_ENGINE_UPDATE_SCREENSHOTS=1`` the two the README shows are also written to
``docs/images/`` (see docs/console.md). One browser and one server serve the whole module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import clean_env, free_port, running

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
WAIT_MS = 30_000


def _apt_install_chromium() -> str | None:
    """Install Debian's chromium when missing; the reason it cannot be, else None."""
    if CHROMIUM.exists():
        return None
    if shutil.which("apt-get") is None:
        return "chromium is missing and this system has no apt-get to install it"
    if os.geteuid() != 0:
        return "chromium is missing and installing it with apt-get needs root"
    command = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(command, env=env, capture_output=True, check=False)
    return None if CHROMIUM.exists() else "apt-get could not install chromium"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed with apt when missing (skipped, saying why, if it cannot)."""
    reason = _apt_install_chromium()
    if reason is not None:
        if os.environ.get("CI") == "true":  # .ci/run installs it: its absence is a failure there
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def project(state: Path) -> Path:
    """The workspace the run edits (inside the server's allowed root)."""
    folder = state / "workspaces" / "greeting"
    folder.mkdir(parents=True)
    (folder / "hello.py").write_text('def greet():\n    return "Hello, world"\n')
    return folder


@pytest.fixture(scope="module")
def server(state: Path, project: Path) -> Iterator[str]:
    port = free_port()
    env = clean_env(
        AGENT_ENGINE_PORT=str(port),
        AGENT_ENGINE_DATABASE_URL=f"sqlite+aiosqlite:///{state / 'agent-engine.db'}",
        AGENT_ENGINE_WORKSPACE_ROOTS=str(project.parent),
        AGENT_ENGINE_LOG_LEVEL="warning",
    )
    with running(["agent_engine", "serve"], state, env, port) as url:
        yield url


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


class Page:
    """A browser page that records every console error and uncaught exception."""

    def __init__(self, browser: Any, base: str, **context: Any) -> None:
        self.context = browser.new_context(
            viewport={"width": 1366, "height": 900}, timezone_id="Europe/Berlin", **context
        )
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def goto(self, path: str) -> Any:
        self.page.goto(self.base + path)
        return self.page

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


def save(page: Any, shots: Path, name: str, *, for_docs: bool = True, **options: Any) -> Path:
    """A screenshot kept with the test's files (and, when asked, the README's copy)."""
    target = shots / name
    page.screenshot(path=str(target), **options)
    if for_docs and os.environ.get("AGENT_ENGINE_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, DOCS_IMAGES / name)
    return target


def test_an_empty_console_says_what_to_do_next(browser: Any, server: str) -> None:
    viewer = Page(browser, server)
    page = viewer.goto("/")
    expect(page).to_have_url(f"{server}/runs")
    expect(page.locator("#runs-empty")).to_contain_text("No runs yet")
    page.keyboard.press("Tab")  # the first stop is the skip link, then the navigation
    expect(page.locator("a.skip")).to_be_focused()
    page.get_by_role("link", name="Approvals", exact=True).click()
    expect(page.locator("#approvals-empty")).to_contain_text("Nothing waits for approval")
    viewer.close()


def _plan() -> str:
    steps = [
        {"step_type": "read_file", "input_data": {"path": "hello.py"}},
        {
            "step_type": "analyze",
            "input_data": {
                "instruction": "Say what greet returns.",
                "inputs": [{"$ref": "steps.1.output.content"}],
            },
        },
        {
            "step_type": "edit_file",
            "input_data": {
                "path": "hello.py",
                "operation": "replace",
                "old": "Hello, world",
                "new": "Hello, console",
            },
        },
    ]
    return json.dumps(steps, indent=2)


def test_a_run_made_in_the_form_pauses_shows_its_diff_and_completes_once_approved(
    browser: Any, server: str, project: Path, shots: Path
) -> None:
    viewer = Page(browser, server)
    page = viewer.goto("/runs/new")
    page.get_by_label("Goal").fill("Greet the console instead of the world")
    page.get_by_label("Workspace").select_option(str(project))
    page.get_by_label("Budget (USD, optional)").fill("0.50")
    page.get_by_label("Explicit plan", exact=False).fill(_plan())
    expect(page.locator("#plan-check")).to_contain_text("3 steps")
    save(page, shots, "console-new-run.png", for_docs=False, full_page=True)
    page.get_by_role("button", name="Create run").click()

    # The run plans nothing (explicit plan), reads, analyzes, and stops before the edit.
    expect(page.locator("#approval")).to_contain_text("Waiting for you", timeout=WAIT_MS)
    run_url = page.url
    expect(page.locator("#approval")).to_contain_text("policy rule")
    diff = page.locator("#approval table.diff")
    expect(diff.locator("td.removed mark").first).to_be_visible()
    expect(diff).to_contain_text('return "Hello, world"')
    expect(diff).to_contain_text('return "Hello, console"')
    save(page, shots, "console-approval.png")

    # The timeline's edit step opens to the same diff; the analyze step to its model call.
    page.locator("#step-2 > details > summary").click()
    expect(page.locator("#step-2 details.call summary")).to_contain_text("offline")
    expect(page.locator("#step-3 table.diff")).to_be_visible()

    inbox = viewer.goto("/approvals")
    item = inbox.locator("ol.inbox li").first
    expect(item).to_contain_text("Step 3 · edit_file")
    expect(item).to_contain_text("policy rule")
    item.get_by_role("link").first.click()

    page.get_by_label("Comment (required to reject)").fill("Approved from the browser test")
    page.get_by_role("button", name="Approve step 3").click()
    expect(page.locator("#run-status")).to_contain_text("completed", timeout=WAIT_MS)
    expect(page).to_have_url(run_url)
    assert 'return "Hello, console"' in (project / "hello.py").read_text()

    expect(page.locator("#audit-state")).to_contain_text("Verified")
    # One model call (the analyze step's): one bar by step, one by model.
    expect(page.locator("#costs figure").nth(0).locator("svg.bars rect")).to_have_count(1)
    expect(page.locator("#costs figure").nth(1)).to_contain_text("offline:")
    expect(page.locator("#costs .chart-legend").first).to_contain_text("#2 analyze")
    expect(page.locator("#plans .decisions")).to_contain_text("Approved from the browser test")
    shown = page.locator("time[datetime]").first.inner_text()
    assert not shown.endswith("UTC"), "times are shown in the viewer's zone"
    page.locator("#step-3 > details > summary").click()
    expect(page.locator("#step-3 table.diff")).to_be_visible()
    save(page, shots, "console-run.png", full_page=True)
    page.emulate_media(color_scheme="dark")
    save(page, shots, "console-run-dark.png", for_docs=False)
    listed = viewer.goto("/runs")
    expect(listed.locator("#runs-body tr")).to_have_count(1)
    expect(listed.locator("#runs-body")).to_contain_text("completed")
    save(listed, shots, "console-runs-dark.png", for_docs=False)
    viewer.close()
