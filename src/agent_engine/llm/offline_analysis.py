"""Static measures the offline model reports on one file: size, long functions, markers, syntax
errors and missing docstrings (``ast``, ``re``); the other Python checks live beside it.

Docstrings follow the usual publicity rules (as pydocstyle applies them): a private module
(``_x.py``) or a name with a leading underscore is not public, ``__all__`` decides at module level,
magic methods, ``typing.overload`` stubs, overrides and property setters need none.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from agent_engine.llm.offline_findings import Finding
from agent_engine.llm.offline_python_checks import likely_bugs, unused_imports

LONG_FUNCTION_LINES = 50

# In Python only comments count, so a string that merely names a marker is not a finding.
_PY_MARKER_RE = re.compile(r"#.*?\b(TODO|FIXME|XXX)\b")
_TEXT_MARKER_RE = re.compile(r"\b(TODO|FIXME|XXX)\b")
# Decorators after which a definition needs no docstring of its own.
_UNDOCUMENTED_DECORATORS = {"overload", "override"}
_ACCESSOR_DECORATORS = {"setter", "deleter"}

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


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


def is_test_module(path: str) -> bool:
    """Whether the file is a test module by its name (``test_x.py``, ``x_test.py``)."""
    stem = PurePosixPath(path).stem
    return is_python_path(path) and (stem.startswith("test_") or stem.endswith("_test"))


def is_private_module(path: str) -> bool:
    """Whether a package or the module itself is private (``_x``; dunder names are public)."""
    parts = PurePosixPath(path).with_suffix("").parts
    return any(part.startswith("_") and not part.startswith("__") for part in parts)


def parse_python(source: str, path: str = "<input>") -> ast.Module:
    """``ast.parse`` without the warnings (invalid escapes…) that are not our report."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(source, filename=path)


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


def _find_markers(path: str, content: str, offset: int, python: bool) -> list[Finding]:
    pattern = _PY_MARKER_RE if python else _TEXT_MARKER_RE
    findings: list[Finding] = []
    for number, line in enumerate(content.split("\n"), start=1 + offset):
        if pattern.search(line):
            findings.append(Finding("todo", path, number, line.strip()[:160], "info"))
    return findings


def _measure_python(path: str, source: str, metrics: FileMetrics) -> list[Finding]:
    try:
        tree = parse_python(source, path)
    except SyntaxError as exc:
        message = f"syntax error: {exc.msg}"
        where = f"line {exc.lineno}" if exc.lineno else "the file"
        suggestion = f"Fix the syntax at {where} first: nothing in this file can be imported."
        return [Finding("syntax_error", path, exc.lineno, message, "error", suggestion)]
    except (ValueError, RecursionError, MemoryError) as exc:
        suggestion = "Make the file parse first: nothing in it can be imported."
        return [Finding("syntax_error", path, None, f"cannot parse: {exc}", "error", suggestion)]
    metrics.parsed = True
    findings: list[Finding] = []
    for name, node in _definitions(tree, ""):
        if isinstance(node, ast.ClassDef):
            metrics.classes += 1
            continue
        metrics.functions += 1
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        metrics.longest_function = max(metrics.longest_function, length)
        if length > LONG_FUNCTION_LINES:
            message = f"function `{name}` is {length} lines long (limit {LONG_FUNCTION_LINES})"
            suggestion = (
                f"Split `{name}` ({length} lines) into helpers of at most "
                f"{LONG_FUNCTION_LINES} lines, one per step it takes, and test them separately."
            )
            findings.append(
                Finding(
                    "long_function", path, node.lineno, message, "warning", suggestion, 1, length
                )
            )
    if not is_test_path(path):
        findings += _missing_docstrings(path, tree)
    findings += unused_imports(path, tree, source.split("\n"))
    findings += likely_bugs(path, tree)
    return findings


def _definitions(node: ast.AST, prefix: str) -> Iterator[tuple[str, Definition]]:
    """Every function and class with its qualified name, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{child.name}"
            yield name, child
            yield from _definitions(child, f"{name}.")
        else:
            yield from _definitions(child, prefix)


def _missing_docstrings(path: str, tree: ast.Module) -> list[Finding]:
    findings: list[Finding] = []
    private_module = is_private_module(path)
    exported = _dunder_all(tree)
    if not private_module:
        for name, node in _public_definitions(tree, "", exported):
            if ast.get_docstring(node) is None:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                message = f"public {kind} `{name}` has no docstring"
                findings.append(Finding("missing_docstring", path, node.lineno, message, "info"))
    needs_module_doc = PurePosixPath(path).name != "__init__.py" and not private_module
    if needs_module_doc and tree.body and ast.get_docstring(tree) is None:
        findings.append(Finding("missing_docstring", path, 1, "module has no docstring", "info"))
    return findings


def _public_definitions(
    node: ast.AST, prefix: str, exported: set[str] | None
) -> Iterator[tuple[str, Definition]]:
    """Public definitions: module level and in public classes, never inside functions."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if not _is_public_name(child.name, exported if not prefix else None):
                continue
            if _needs_no_docstring(child):
                continue
            name = f"{prefix}{child.name}"
            yield name, child
            if isinstance(child, ast.ClassDef):
                yield from _public_definitions(child, f"{name}.", None)
        elif not isinstance(child, ast.expr | ast.Lambda):
            # Definitions under `if`, `try` or `with` at this level are still at this level.
            yield from _public_definitions(child, prefix, exported)


def _is_public_name(name: str, exported: set[str] | None) -> bool:
    if exported is not None:
        return name in exported
    return not name.startswith("_")


def _needs_no_docstring(node: Definition) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in _UNDOCUMENTED_DECORATORS:
            return True
        if isinstance(target, ast.Attribute) and target.attr in _ACCESSOR_DECORATORS:
            return True
    return False


def _dunder_all(tree: ast.Module) -> set[str] | None:
    """The names a module-level ``__all__`` lists, or None when it has none (or builds it)."""
    for statement in tree.body:
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
            value: ast.expr | None = statement.value
        elif isinstance(statement, ast.AnnAssign):
            targets, value = [statement.target], statement.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            if isinstance(value, ast.List | ast.Tuple) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
            ):
                return {
                    e.value
                    for e in value.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                }
            return None
    return None
