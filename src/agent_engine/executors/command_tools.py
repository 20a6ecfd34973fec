"""The table of known tools: one entry per program on the default allowlist; data only.

Each entry says which options take a value, which values are paths (read or written), which
options widen what the tool can reach (``escalation``: never auto-approved) or are refused
outright, and what the tool can do whatever its arguments. Read by
:mod:`agent_engine.executors.command_analysis`.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

ValueKind = Literal["text", "read", "write", "setting"]


@dataclass(frozen=True)
class Option:
    """One option of a tool: whether it takes a value and what that value is."""

    takes_value: bool = False
    value: ValueKind = "text"
    escalation: str | None = None  # why it widens the tool's reach (never auto-approved)
    refused: str | None = None  # why it is refused outright (literal: at plan time)
    network: bool = False
    writes: bool = False


@dataclass(frozen=True)
class Tool:
    """A known program: its options and what it can do whatever the arguments."""

    name: str
    options: dict[str, Option]
    runs_arbitrary_code: str | None = None
    writes_files: str | None = None
    uses_network: str | None = None
    # How positional arguments are read: all paths, a pattern then paths (grep), or opaque.
    positionals: Literal["paths", "pattern_then_paths", "opaque"] = "paths"


_TEXT = Option(takes_value=True)
_READ = Option(takes_value=True, value="read")
_WRITE = Option(takes_value=True, value="write", writes=True)
CONFIG_RUNS_CODE = (
    "sets git configuration, which names programs git runs "
    "(an alias starting with '!', core.fsmonitor, core.pager)"
)

PYTEST = Tool(
    "pytest",
    {
        "-p": Option(takes_value=True, escalation="loads a plugin module, which runs its code"),
        "--pdbcls": Option(takes_value=True, escalation="imports a debugger class by name"),
        "--pyargs": Option(escalation="imports test modules by name from anywhere on sys.path"),
        "-c": Option(takes_value=True, value="read", escalation="reads another configuration"),
        "--config-file": Option(
            takes_value=True, value="read", escalation="reads another configuration"
        ),
        "-o": Option(takes_value=True, value="setting", escalation="overrides configuration"),
        "--override-ini": Option(
            takes_value=True, value="setting", escalation="overrides configuration"
        ),
        "--rootdir": _READ,
        "--confcutdir": _READ,
        "--basetemp": _WRITE,
        "--junitxml": _WRITE,
        "--junit-xml": _WRITE,
        # The value only as --debug=PATH; bare, it writes pytestdebug.log in the cwd.
        "--debug": Option(value="write", writes=True),
        "--log-file": _WRITE,
        "--resultlog": _WRITE,
        "--pastebin": Option(takes_value=True, network=True),
        "--ignore": _READ,
        "--ignore-glob": _TEXT,
        "--deselect": _TEXT,
        "-k": _TEXT,
        "-m": _TEXT,
        "-W": _TEXT,
        "--tb": _TEXT,
        "--maxfail": _TEXT,
        "--durations": _TEXT,
        "--import-mode": _TEXT,
        "-r": _TEXT,
    },
    runs_arbitrary_code="runs the workspace's test code and conftest.py files",
    writes_files="writes .pytest_cache and __pycache__ in the workspace",
    uses_network="only if the code it runs does",
)

PYTHON = Tool(
    "python",
    # -X pycache_prefix=PATH writes there.
    {"-W": _TEXT, "-X": Option(takes_value=True, value="setting"), "-c": _TEXT, "-m": _TEXT},
    runs_arbitrary_code="runs Python code",
    writes_files="whatever the code it runs writes",
    uses_network="only if the code it runs does",
    positionals="opaque",
)

RUFF = Tool(
    "ruff",
    {
        "--fix": Option(writes=True),
        "--unsafe-fixes": Option(writes=True),
        "--config": Option(takes_value=True, value="read"),
        "--cache-dir": _WRITE,
        "--output-file": _WRITE,
        "-o": _WRITE,
        "--select": _TEXT,
        "--ignore": _TEXT,
        "--extend-select": _TEXT,
        "--output-format": _TEXT,
        "--target-version": _TEXT,
        "--line-length": _TEXT,
        "--exclude": _TEXT,
        "--extend-exclude": _TEXT,
        "--stdin-filename": _TEXT,
    },
)

RUFF_SUBCOMMANDS = frozenset({"check", "format", "rule", "config", "linter", "version"})
LS = Tool("ls", {"-I": _TEXT, "--ignore": _TEXT, "--hide": _TEXT, "-w": _TEXT, "-T": _TEXT})
CAT = Tool("cat", {})
GREP = Tool(
    "grep",
    {
        "-e": _TEXT,
        "--regexp": _TEXT,
        "-f": _READ,
        "--file": _READ,
        "--exclude-from": _READ,
        "-m": _TEXT,
        "--max-count": _TEXT,
        "-A": _TEXT,
        "-B": _TEXT,
        "-C": _TEXT,
        "-d": _TEXT,
        "-D": _TEXT,
        "--include": _TEXT,
        "--exclude": _TEXT,
        "--exclude-dir": _TEXT,
        "--label": _TEXT,
    },
    positionals="pattern_then_paths",
)

# git's options before the subcommand; the subcommand's own arguments are handled in _git.
GIT = Tool(
    "git",
    {
        "-C": _READ,
        "-c": Option(takes_value=True, refused=CONFIG_RUNS_CODE),
        "--config-env": Option(takes_value=True, refused=CONFIG_RUNS_CODE),
        "--exec-path": Option(refused="runs git's helper programs from another folder"),
        "--git-dir": _READ,
        "--work-tree": _READ,
        "--namespace": _TEXT,
        "-p": Option(escalation="runs the configured pager"),
        "--paginate": Option(escalation="runs the configured pager"),
    },
    runs_arbitrary_code=(
        "runs the repository's hooks and the programs its configuration names "
        "(core.fsmonitor, filters, '!' aliases)"
    ),
)
# "help" is left out: `git help --web` starts a browser.
GIT_READ_ONLY = frozenset(
    {"status", "log", "diff", "show", "ls-files", "rev-parse", "blame", "grep", "describe"}
    | {"shortlog", "cat-file", "rev-list", "ls-tree", "version"}
)
GIT_NETWORK = frozenset(
    {"clone", "fetch", "pull", "push", "ls-remote", "submodule", "remote", "archive"}
)
GIT_WRITES = frozenset(
    {"init", "add", "commit", "checkout", "switch", "restore", "reset", "stash", "merge"}
    | {"rebase", "apply", "rm", "mv", "tag", "branch", "cherry-pick", "revert", "clean", "notes"}
)
# Options of a subcommand whose value is text (a message, a branch name), never a path.
GIT_TEXT_OPTIONS: dict[str, frozenset[str]] = {
    "commit": frozenset({"-m", "--message", "--author", "--date"}),
    "merge": frozenset({"-m", "--message"}),
    "tag": frozenset({"-m", "--message"}),
    "stash": frozenset({"-m", "--message"}),
    "checkout": frozenset({"-b", "-B"}),
    "switch": frozenset({"-c", "-C"}),
}
# Options of a subcommand that run a program given on the command line: refused.
GIT_RUNS_GIVEN_PROGRAM = "runs a program given on the command line"
GIT_PROGRAM_OPTIONS: dict[str, frozenset[str]] = {
    "clone": frozenset({"-u", "--upload-pack", "-c", "--config", "--template"}),
    "init": frozenset({"--template"}),
    "fetch": frozenset({"--upload-pack"}),
    "pull": frozenset({"--upload-pack"}),
    "ls-remote": frozenset({"--upload-pack"}),
    "push": frozenset({"--receive-pack", "--exec"}),
    "archive": frozenset({"--exec"}),
    "rebase": frozenset({"-x", "--exec"}),
    "grep": frozenset({"-O", "--open-files-in-pager"}),
    "submodule": frozenset({"foreach"}),
}

TOOLS: dict[str, Tool] = {tool.name: tool for tool in (PYTEST, PYTHON, RUFF, LS, CAT, GREP, GIT)}
_PYTHON_NAME = re.compile(r"^python(3(\.\d+)?)?$")


def tool_for(program: str) -> Tool | None:
    """The table entry for ``program`` (a name or a path), by its basename."""
    name = posixpath.basename(program)
    if _PYTHON_NAME.match(name):
        return PYTHON
    return TOOLS.get(name)
