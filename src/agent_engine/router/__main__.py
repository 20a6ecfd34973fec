"""Run the router service: ``python -m agent_engine.router --port 8100``."""

from __future__ import annotations

import argparse
import os

import uvicorn

from agent_engine.config import get_settings
from agent_engine.router.app import create_router_app
from agent_engine.tracing import process_tracing

DEFAULT_PORT = 8100


def main(argv: list[str] | None = None) -> None:
    """Parse ``--host``/``--port`` and serve the router app with uvicorn until stopped."""
    parser = argparse.ArgumentParser(prog="python -m agent_engine.router")
    parser.add_argument(
        "--host",
        default=os.environ.get("AGENT_ENGINE_HOST", "127.0.0.1"),
        help="interface to bind (env AGENT_ENGINE_HOST, default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AGENT_ENGINE_ROUTER_PORT", DEFAULT_PORT)),
        help=f"port to listen on (env AGENT_ENGINE_ROUTER_PORT, default {DEFAULT_PORT})",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    args = parser.parse_args(argv)
    app = create_router_app(get_settings())
    with process_tracing("agent-engine-router"):  # as the OTEL_* variables ask
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
