"""``python -m agent_engine`` is the ``agent-engine`` command."""

from agent_engine.cli.main import app

app()
