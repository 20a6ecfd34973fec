"""The web console: server-rendered pages (Jinja2, htmx) served by the API app at ``/``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from agent_engine.ui import actions, list_pages, login, new_run, run_page
from agent_engine.ui.render import STATIC_DIR

STATIC_URL = "/static"


def install_console(app: FastAPI) -> None:
    """Mount the console's pages and its static files (``/static``) on ``app``."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(login.router)
    app.include_router(list_pages.router)
    # /runs/new before /runs/{run_id}, which would otherwise take "new" for an id.
    app.include_router(new_run.router)
    app.include_router(run_page.router)
    app.include_router(actions.router)
