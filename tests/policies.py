"""A policies file for tests about something other than approval: commands and edits run
without a person under the named policy ``unattended`` (a run's own flags may not free them)."""

from __future__ import annotations

from pathlib import Path

UNATTENDED = "unattended"
_FILE = """
policies:
  unattended:
    description: tests only - edits and commands inside the workspace run without a person
    rules:
      - {step_type: edit_file, action: auto_approve}
      - {step_type: run_command, action: auto_approve}
"""


def unattended_policies(folder: Path) -> Path:
    """Write the policies file into ``folder`` and return its path."""
    path = folder / "policies.yaml"
    path.write_text(_FILE, encoding="utf-8")
    return path
