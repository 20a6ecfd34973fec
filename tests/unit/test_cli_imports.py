"""The command line is parsed without the client, the API or the engine: `--help` stays quick."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_imports_no_client_api_or_engine_until_a_command_runs() -> None:
    probe = (
        "import sys, agent_engine.cli.main; "
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'agent_engine.client', 'agent_engine.api', 'agent_engine.engine.context'))))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "[]"
