"""What a command can do, read from its argv with the table of known tools; pure, no I/O.

Besides what the table says, any argument, or ``--option=value`` value, that is an absolute path
or climbs out with ``..`` is a path too, so an option missing from the table still cannot point
outside the workspace unseen.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Literal

from agent_engine.executors.command_tools import (
    CONFIG_RUNS_CODE,
    GIT,
    GIT_NETWORK,
    GIT_PROGRAM_OPTIONS,
    GIT_READ_ONLY,
    GIT_RUNS_GIVEN_PROGRAM,
    GIT_TEXT_OPTIONS,
    GIT_WRITES,
    PYTEST,
    PYTHON,
    RUFF,
    RUFF_SUBCOMMANDS,
    Option,
    Tool,
    tool_for,
)

Access = Literal["read", "write"]


@dataclass(frozen=True)
class Finding:
    """Something an argument makes the command do; ``index`` is its position in argv."""

    index: int
    argument: str
    kind: str
    message: str


@dataclass(frozen=True)
class PathArgument:
    index: int
    value: str
    access: Access


@dataclass(frozen=True)
class CommandAnalysis:
    """What a command can do. ``refusals`` are never run; ``escalations`` and paths outside the
    workspace mean the command is never approved without a person."""

    tool: str | None
    runs_arbitrary_code: bool = False
    writes_files: bool = False
    uses_network: bool = False
    paths: tuple[PathArgument, ...] = ()
    outside: tuple[Finding, ...] = ()
    escalations: tuple[Finding, ...] = ()
    refusals: tuple[Finding, ...] = ()
    unknown_arguments: tuple[int, ...] = ()  # not literal yet (a ``$ref``)
    warnings: tuple[str, ...] = field(default=())

    @property
    def confined(self) -> bool:
        """Every argument is known, stays inside the workspace, and widens nothing."""
        return not (self.outside or self.escalations or self.refusals or self.unknown_arguments)

    @property
    def blocking(self) -> tuple[Finding, ...]:
        """What is refused outright: options refused by the table and paths outside."""
        return (*self.refusals, *self.outside)

    def capabilities(self) -> dict[str, object]:
        """The preview's summary: what the command can do, and the offending arguments."""
        return {
            "tool": self.tool,
            "runs_arbitrary_code": self.runs_arbitrary_code,
            "writes_files": self.writes_files,
            "uses_network": self.uses_network,
            "reads_outside_workspace": [f.argument for f in self.outside if f.kind == "read"],
            "writes_outside_workspace": [f.argument for f in self.outside if f.kind == "write"],
            "path_arguments": [p.value for p in self.paths],
        }


@dataclass
class _Reader:
    """Accumulates findings while the argv is read."""

    workspace: str | None
    cwd: str
    paths: list[PathArgument] = field(default_factory=list)
    outside: list[Finding] = field(default_factory=list)
    escalations: list[Finding] = field(default_factory=list)
    refusals: list[Finding] = field(default_factory=list)
    writes: bool = False
    network: bool = False

    def path(self, index: int, value: str, access: Access, shown: str | None = None) -> None:
        self.paths.append(PathArgument(index, value, access))
        reason = leaves_workspace(value, self.workspace, self.cwd)
        if reason is not None:
            where = "writes" if access == "write" else "reads"
            self.outside.append(
                Finding(index, shown or value, access, f"{where} {value!r}, which {reason}")
            )

    def loose(self, index: int, value: str) -> None:
        """An argument of unknown meaning: a path only if it looks like one that leaves."""
        candidate = value.split("=", 1)[1] if value.startswith("-") and "=" in value else value
        if candidate.startswith("/") or candidate.split("/", 1)[0] == "..":
            self.path(index, candidate, "read", shown=value)

    def option(self, index: int, name: str, spec: Option, value: str | None, shown: str) -> None:
        if spec.refused:
            self.refusals.append(Finding(index, shown, "refused", f"{name} {spec.refused}"))
        if spec.escalation and not (name == "-p" and (value or "").startswith("no:")):
            message = f"{name} {spec.escalation}"
            self.escalations.append(Finding(index, shown, "escalation", message))
        self.writes |= spec.writes
        self.network |= spec.network
        if value is None:
            return
        if spec.value == "read" or spec.value == "write":
            self.path(index, value, spec.value, shown=shown)
        elif spec.value == "setting" and "=" in value:  # -o cache_dir=PATH
            setting = value.split("=", 1)[1]
            if setting.startswith("/") or setting.split("/", 1)[0] == "..":
                self.path(index, setting, "write", shown=shown)


def leaves_workspace(value: str, workspace: str | None, cwd: str = "") -> str | None:
    """Why the path ``value`` (relative to ``cwd`` inside the workspace) leaves it, or None.

    Without a known workspace (at plan time) every absolute path counts as leaving it: literal
    paths are relative to the workspace, as for read_file.
    """
    if value.startswith("/"):
        if workspace is not None:
            root = posixpath.normpath(workspace)
            normalized = posixpath.normpath(value)
            if normalized == root or normalized.startswith(root.rstrip("/") + "/"):
                return None
        return "is outside the workspace (paths are relative to the workspace root)"
    # Counted component by component: normpath would let 'a/../..' look like '..' only.
    depth = 0
    for part in posixpath.join(cwd, value).split("/"):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            return "climbs out of the workspace with '..'"
    return None


def _read_options(
    tool: Tool, argv: list[str | None], start: int, reader: _Reader, stop_at_positional: bool
) -> tuple[list[tuple[int, str]], list[int], int]:
    """Read options from ``start``; return the positionals, the unknown indexes and where it
    stopped (``stop_at_positional``: at the first positional, e.g. git's subcommand)."""
    positionals: list[tuple[int, str]] = []
    unknown: list[int] = []
    index = start
    only_positionals = False
    while index < len(argv):
        arg = argv[index]
        if arg is None:
            unknown.append(index)
            index += 1
            continue
        if only_positionals or arg == "-" or not arg.startswith("-"):
            if stop_at_positional:
                return positionals, unknown, index
            positionals.append((index, arg))
            index += 1
            continue
        if arg == "--":
            only_positionals = True
            index += 1
            continue
        name, has_equals, inline = arg.partition("=")
        spec = tool.options.get(name)
        if spec is None and not name.startswith("--") and len(name) > 2:
            spec = tool.options.get(name[:2])  # -pplugin, -C/dir
            if spec is not None and spec.takes_value:
                name, inline, has_equals = name[:2], arg[2:], "="
            else:
                spec = None
        if spec is None:
            reader.loose(index, arg)
            index += 1
            continue
        value: str | None = inline if has_equals else None
        at = index  # findings name the option, with its value
        if spec.takes_value and value is None and index + 1 < len(argv):
            index += 1
            nxt = argv[index]
            if nxt is None:
                unknown.append(index)
            value = nxt
        shown = arg if value is None or has_equals else f"{arg} {value}"
        reader.option(at, name, spec, value, shown)
        index += 1
    return positionals, unknown, index


def _python(argv: list[str | None], reader: _Reader, workspace: str | None) -> CommandAnalysis:
    """The interpreter's own options, then ``-c``/``-m``/a script; ``-m pytest`` is pytest."""
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg is None:
            return _finish(PYTHON, reader, [index], ["an argument is not known yet"])
        if arg == "-m" and index + 1 < len(argv):
            module = argv[index + 1]
            if module == "pytest":
                inner = analyze_command(["pytest", *argv[index + 2 :]], workspace, reader.cwd)
                return _shifted(inner, index + 1, PYTHON, _finish(PYTHON, reader, [], []))
            return _finish(PYTHON, reader, [], [])
        if arg == "-c" or arg.startswith("-c"):
            return _finish(PYTHON, reader, [], [])
        if not arg.startswith("-"):
            reader.path(index, arg, "read")
            return _finish(PYTHON, reader, [], [])
        if arg in ("-W", "-X") and index + 1 < len(argv):
            value = argv[index + 1]
            if value is None:
                return _finish(PYTHON, reader, [index + 1], ["an argument is not known yet"])
            reader.option(index, arg, PYTHON.options[arg], value, f"{arg} {value}")
            index += 1
        index += 1
    return _finish(PYTHON, reader, [], [])


def _shifted(
    inner: CommandAnalysis, offset: int, tool: Tool, outer: CommandAnalysis
) -> CommandAnalysis:
    """``inner`` (analysed as its own argv) with indexes moved to where it sits in the outer
    command, joined with what ``outer`` (the interpreter's own options) found."""

    def move(findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
        return tuple(Finding(f.index + offset, f.argument, f.kind, f.message) for f in findings)

    return CommandAnalysis(
        tool=f"{tool.name} -m {inner.tool}",
        runs_arbitrary_code=True,
        writes_files=True,
        uses_network=inner.uses_network,
        paths=(
            *outer.paths,
            *(PathArgument(p.index + offset, p.value, p.access) for p in inner.paths),
        ),
        outside=(*outer.outside, *move(inner.outside)),
        escalations=(*outer.escalations, *move(inner.escalations)),
        refusals=(*outer.refusals, *move(inner.refusals)),
        unknown_arguments=tuple(i + offset for i in inner.unknown_arguments),
        warnings=(
            *inner.warnings,
            *(f.message for f in (*outer.refusals, *outer.escalations, *outer.outside)),
        ),
    )


def _git(argv: list[str | None], reader: _Reader) -> CommandAnalysis:
    _, unknown, index = _read_options(GIT, argv, 1, reader, stop_at_positional=True)
    warnings: list[str] = []
    sub = argv[index] if index < len(argv) else None
    if index < len(argv) and sub is None:
        unknown.append(index)
    if sub is not None:
        if sub == "config":
            message = f"git config {CONFIG_RUNS_CODE}"
            reader.escalations.append(Finding(index, sub, "escalation", message))
        elif sub not in GIT_READ_ONLY:
            reader.writes = True
            if sub in GIT_NETWORK:
                reader.network = True
            if sub not in GIT_NETWORK | GIT_WRITES:
                reader.escalations.append(
                    Finding(
                        index,
                        sub,
                        "escalation",
                        f"git {sub!r} is not a known subcommand: an alias in the repository's "
                        "configuration may run a shell",
                    )
                )
        _git_arguments(argv, index, sub, reader, unknown)
    return _finish(GIT, reader, unknown, warnings)


def _git_arguments(
    argv: list[str | None], index: int, sub: str, reader: _Reader, unknown: list[int]
) -> None:
    """The subcommand's own arguments: programs they name are refused, paths checked."""
    text = GIT_TEXT_OPTIONS.get(sub, frozenset())
    programs = GIT_PROGRAM_OPTIONS.get(sub, frozenset())
    skip_next = False
    for position in range(index + 1, len(argv)):
        arg = argv[position]
        if arg is None:
            unknown.append(position)
            continue
        if skip_next:
            skip_next = False
            continue
        name = arg.partition("=")[0]
        short = name[:2] if len(name) > 2 and not name.startswith("--") else name
        if name in programs or short in programs:
            message = f"git {sub} {name} {GIT_RUNS_GIVEN_PROGRAM}"
            reader.refusals.append(Finding(position, arg, "refused", message))
        elif arg in text:
            skip_next = True
        elif arg.startswith("ext::"):
            message = f"git's ext:: transport {GIT_RUNS_GIVEN_PROGRAM}"
            reader.refusals.append(Finding(position, arg, "refused", message))
        else:
            reader.loose(position, arg.removeprefix("file://"))


def _finish(
    tool: Tool, reader: _Reader, unknown: list[int], warnings: list[str]
) -> CommandAnalysis:
    notes = list(warnings)
    for label, reason in (
        ("runs arbitrary code", tool.runs_arbitrary_code),
        ("writes files", tool.writes_files),
        ("uses the network", tool.uses_network),
    ):
        if reason is not None:
            notes.append(f"{label}: {reason}")
    notes.extend(f.message for f in (*reader.refusals, *reader.escalations, *reader.outside))
    if reader.network and tool.uses_network is None:
        notes.append("uses the network: an argument asks for it")
    return CommandAnalysis(
        tool=tool.name,
        runs_arbitrary_code=tool.runs_arbitrary_code is not None or bool(reader.escalations),
        writes_files=tool.writes_files is not None or reader.writes,
        uses_network=tool.uses_network is not None or reader.network,
        paths=tuple(reader.paths),
        outside=tuple(reader.outside),
        escalations=tuple(reader.escalations),
        refusals=tuple(reader.refusals),
        unknown_arguments=tuple(unknown),
        warnings=tuple(notes),
    )


def analyze_command(
    argv: list[str | None], workspace: str | None = None, cwd: str | None = None
) -> CommandAnalysis:
    """What ``argv`` can do; ``None`` elements are not known yet (``$ref``), ``workspace`` is the
    absolute workspace root when known, ``cwd`` the step's directory relative to it."""
    reader = _Reader(workspace, cwd or "")
    program = argv[0] if argv else None
    tool = tool_for(program) if program else None
    if tool is None:
        return CommandAnalysis(
            tool=None,
            unknown_arguments=(0,) if program is None else (),
            warnings=("not a known tool: what it can do is not known",),
        )
    if tool is PYTHON:
        return _python(argv, reader, workspace)
    if tool is GIT:
        return _git(argv, reader)
    positionals, unknown, _ = _read_options(tool, argv, 1, reader, stop_at_positional=False)
    pattern_given = any(
        a is not None and a.partition("=")[0] in ("-e", "--regexp", "-f", "--file") for a in argv
    )
    if tool.positionals == "pattern_then_paths" and not pattern_given:
        positionals = positionals[1:]  # grep PATTERN FILE…
    if tool is RUFF and positionals and positionals[0][1] in RUFF_SUBCOMMANDS:
        positionals = positionals[1:]
    for position, value in positionals:
        path = value.split("::", 1)[0] if tool is PYTEST else value
        reader.path(position, path, "write" if tool is RUFF and _ruff_writes(argv) else "read")
    if tool is RUFF and _ruff_writes(argv):
        reader.writes = True
    return _finish(tool, reader, unknown, [])


def _ruff_writes(argv: list[str | None]) -> bool:
    """``ruff format`` (without --check/--diff) and ``--fix`` change the files they name."""
    args = [a for a in argv[1:] if a is not None]
    if "--fix" in args:
        return True
    return bool(args) and args[0] == "format" and not {"--check", "--diff"} & set(args)
