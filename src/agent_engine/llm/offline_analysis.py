"""Static measures the offline model reports: sizes, long functions, markers, syntax errors,
unused imports, missing docstrings and untested modules, all from the text alone (``ast``, ``re``).
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

LONG_FUNCTION_LINES = 50
SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}

# In Python only comments count, so a string that merely names a marker is not a finding.
_PY_MARKER_RE = re.compile(r"#.*?\b(TODO|FIXME|XXX)\b")
_TEXT_MARKER_RE = re.compile(r"\b(TODO|FIXME|XXX)\b")
_TYPE_TEXT_RE = re.compile(r"^[A-Za-z_][\w.\[\], |]*$")
_IDENTIFIER_RE = re.compile(r"[A-Za-z_]\w*")
_NOT_MODULES = {"__init__.py", "__main__.py", "setup.py", "conftest.py", "noxfile.py", "manage.py"}
_NOT_MODULE_DIRS = {"migrations", "docs", "doc"}

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@dataclass(frozen=True)
class Finding:
    """One reported problem; ``line`` is 1-based in the file, None when it concerns a whole file."""

    kind: str
    path: str | None
    line: int | None
    message: str
    severity: str

    def as_json(self) -> dict[str, Any]:
        """The finding as the analysis JSON carries it."""
        return {
            "kind": self.kind,
            "path": self.path,
            "line": self.line,
            "message": self.message,
            "severity": self.severity,
        }

    def sort_key(self) -> tuple[int, str, int, str, str]:
        """Most severe first, then by place, so every listing of findings has one order."""
        rank = SEVERITY_RANK.get(self.severity, 3)
        return (rank, self.path or "", self.line or 0, self.kind, self.message)


@dataclass
class FileMetrics:
    """Size and shape of one file; the Python fields stay 0 when the file did not parse."""

    path: str
    lines: int
    bytes: int
    python: bool
    parsed: bool = False
    functions: int = 0
    classes: int = 0
    longest_function: int = 0

    def as_json(self) -> dict[str, Any]:
        """The metrics as the analysis JSON carries them."""
        return dict(vars(self))


def is_python_path(path: str) -> bool:
    """Whether the path names a Python source file."""
    return path.endswith((".py", ".pyi"))


def is_test_path(path: str) -> bool:
    """Whether the path looks like a test module or lives in a tests directory."""
    pure = PurePosixPath(path)
    name = pure.name
    return (
        name.startswith("test_")
        or pure.stem.endswith("_test")
        or name == "conftest.py"
        or any(part in {"tests", "test"} for part in pure.parts[:-1])
    )


def measure_file(
    path: str, content: str, start_line: int = 1, complete: bool = True
) -> tuple[FileMetrics, list[Finding]]:
    """Measure one file; ``complete`` False (a slice or a cut file) skips the ``ast`` checks."""
    offset = start_line - 1
    metrics = FileMetrics(
        path=path,
        lines=content.count("\n") + 1 if content else 0,
        bytes=len(content.encode("utf-8", errors="replace")),
        python=is_python_path(path),
    )
    findings = _find_markers(path, content, offset, metrics.python)
    if metrics.python and complete:
        findings += _measure_python(path, content, metrics)
    return metrics, findings


def find_untested_modules(paths: list[str]) -> list[Finding]:
    """Modules no test file mentions by name (``foo.py`` ↔ ``test_foo*.py``, ``*_foo_test.py``)."""
    python = [path for path in paths if is_python_path(path)]
    modules = sorted(path for path in python if _needs_test(path))
    if not modules:
        return []
    tests = [path for path in python if is_test_path(path)]
    if not tests:
        return [
            Finding("no_tests", None, None, f"no test files for {len(modules)} modules", "warning")
        ]
    test_keys = sorted({f"_{PurePosixPath(path).stem}_" for path in tests})
    findings: list[Finding] = []
    for path in modules:
        token = f"_{PurePosixPath(path).stem}_"
        if not any(token in key for key in test_keys):
            message = f"no test module mentions `{PurePosixPath(path).stem}`"
            findings.append(Finding("missing_test", path, None, message, "info"))
    return findings


def _needs_test(path: str) -> bool:
    pure = PurePosixPath(path)
    return (
        pure.suffix == ".py"
        and not is_test_path(path)
        and pure.name not in _NOT_MODULES
        and not any(part in _NOT_MODULE_DIRS or part.startswith(".") for part in pure.parts[:-1])
    )


def _find_markers(path: str, content: str, offset: int, python: bool) -> list[Finding]:
    pattern = _PY_MARKER_RE if python else _TEXT_MARKER_RE
    findings: list[Finding] = []
    for number, line in enumerate(content.split("\n"), start=1 + offset):
        match = pattern.search(line)
        if match:
            findings.append(Finding("todo", path, number, line.strip()[:160], "info"))
    return findings


def _measure_python(path: str, source: str, metrics: FileMetrics) -> list[Finding]:
    try:
        with warnings.catch_warnings():
            # Invalid escape sequences and the like warn at parse time; they are not our report.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        message = f"syntax error: {exc.msg}"
        return [Finding("syntax_error", path, exc.lineno, message, "error")]
    except (ValueError, RecursionError, MemoryError) as exc:
        return [Finding("syntax_error", path, None, f"cannot parse: {exc}", "error")]
    metrics.parsed = True
    findings: list[Finding] = []
    for name, node, in_function in _definitions(tree, "", in_function=False):
        if isinstance(node, ast.ClassDef):
            metrics.classes += 1
        else:
            metrics.functions += 1
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            metrics.longest_function = max(metrics.longest_function, length)
            if length > LONG_FUNCTION_LINES:
                message = f"function `{name}` is {length} lines long (limit {LONG_FUNCTION_LINES})"
                findings.append(Finding("long_function", path, node.lineno, message, "warning"))
        documented = in_function or not _is_public(name) or is_test_path(path)
        if not documented and ast.get_docstring(node) is None:
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            message = f"public {kind} `{name}` has no docstring"
            findings.append(Finding("missing_docstring", path, node.lineno, message, "info"))
    needs_module_doc = PurePosixPath(path).name != "__init__.py" and not is_test_path(path)
    if needs_module_doc and tree.body and ast.get_docstring(tree) is None:
        findings.append(Finding("missing_docstring", path, 1, "module has no docstring", "info"))
    findings += _unused_imports(path, tree, source.split("\n"))
    return findings


def _definitions(
    node: ast.AST, prefix: str, *, in_function: bool
) -> Iterator[tuple[str, Definition, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{child.name}"
            yield name, child, in_function
            nested = in_function or not isinstance(child, ast.ClassDef)
            yield from _definitions(child, f"{name}.", in_function=nested)
        else:
            yield from _definitions(child, prefix, in_function=in_function)


def _is_public(qualified_name: str) -> bool:
    return not any(part.startswith("_") for part in qualified_name.split("."))


def _unused_imports(path: str, tree: ast.Module, lines: list[str]) -> list[Finding]:
    # Package __init__ modules import to re-export; flagging those would be noise.
    if PurePosixPath(path).name == "__init__.py":
        return []
    used = _used_names(tree)
    guarded = _imports_in_try(tree)
    findings: list[Finding] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in guarded:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if "noqa" in lines[node.lineno - 1]:
            continue
        for alias in node.names:
            if alias.name == "*":
                continue
            bound = alias.asname or alias.name.split(".")[0]
            if bound not in used:
                message = f"`{alias.name}` is imported but never used"
                findings.append(Finding("unused_import", path, node.lineno, message, "warning"))
    return findings


def _used_names(tree: ast.Module) -> set[str]:
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # Quoted annotations and __all__ entries name imports inside strings.
            used.update(
                _IDENTIFIER_RE.findall(node.value) if _TYPE_TEXT_RE.match(node.value) else ()
            )
    return used


def _imports_in_try(tree: ast.Module) -> set[int]:
    # `try: import x except ImportError` probes for optional dependencies: not unused.
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try | ast.TryStar):
            for statement in node.body:
                for inner in ast.walk(statement):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        guarded.add(id(inner))
    return guarded
