"""Python checks of the offline model beyond size and docstrings: unused imports and a few likely
bugs that ``ast`` shows with certainty (mutable defaults, bare ``except``, ``is`` with a literal,
an ``assert`` of a tuple).
"""

from __future__ import annotations

import ast
import re
from pathlib import PurePosixPath

from agent_engine.llm.offline_findings import Finding

_TYPE_TEXT_RE = re.compile(r"^[A-Za-z_][\w.\[\], |]*$")
_IDENTIFIER_RE = re.compile(r"[A-Za-z_]\w*")
_MUTABLE_LITERALS = {ast.List: "list", ast.Dict: "dict", ast.Set: "set"}


def _finding(kind: str, path: str, line: int | None, message: str, suggestion: str) -> Finding:
    return Finding(kind, path, line, message, "warning", suggestion)


def unused_imports(path: str, tree: ast.Module, lines: list[str]) -> list[Finding]:
    """Imported names the module never uses (``__future__``, ``try`` and ``noqa`` imports aside)."""
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
                if len(node.names) == 1 and node.lineno == node.end_lineno:
                    statement = lines[node.lineno - 1].strip()
                    suggestion = f"Delete line {node.lineno} (`{statement}`): nothing uses it."
                else:
                    suggestion = f"Remove `{alias.name}` from the import on line {node.lineno}."
                findings.append(_finding("unused_import", path, node.lineno, message, suggestion))
    return findings


def likely_bugs(path: str, tree: ast.Module) -> list[Finding]:
    """Code that almost always does something else than its author meant."""
    findings: list[Finding] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            findings += _mutable_defaults(path, node)
        elif isinstance(node, ast.ExceptHandler) and node.type is None and not _reraises(node):
            findings.append(
                _finding(
                    "bare_except",
                    path,
                    node.lineno,
                    "bare `except:` also catches KeyboardInterrupt and SystemExit",
                    "Catch the exceptions expected here (at least `except Exception:`).",
                )
            )
        elif isinstance(node, ast.Compare):
            findings += _literal_identity(path, node)
        elif isinstance(node, ast.Assert) and isinstance(node.test, ast.Tuple) and node.test.elts:
            findings.append(
                _finding(
                    "assert_tuple",
                    path,
                    node.lineno,
                    "`assert` of a tuple always passes",
                    "Drop the parentheses around the condition and its message.",
                )
            )
    return findings


def _mutable_defaults(path: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Finding]:
    arguments = node.args
    positional = [*arguments.posonlyargs, *arguments.args]
    pairs = list(
        zip(
            positional[len(positional) - len(arguments.defaults) :], arguments.defaults, strict=True
        )
    )
    pairs += [
        (a, d)
        for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
        if d is not None
    ]
    findings: list[Finding] = []
    for argument, default in pairs:
        kind = _MUTABLE_LITERALS.get(type(default))
        if kind is None:
            continue
        message = (
            f"`{node.name}` has a mutable default for `{argument.arg}` ({kind}): every call "
            "shares one object"
        )
        suggestion = f"Default `{argument.arg}` to None and create the {kind} inside `{node.name}`."
        findings.append(_finding("mutable_default", path, default.lineno, message, suggestion))
    return findings


def _literal_identity(path: str, node: ast.Compare) -> list[Finding]:
    operands = [node.left, *node.comparators]
    for index, operator in enumerate(node.ops):
        if not isinstance(operator, ast.Is | ast.IsNot):
            continue
        pair = operands[index : index + 2]
        if any(_is_value_literal(operand) for operand in pair):
            text = ast.unparse(ast.Compare(pair[0], [operator], [pair[1]]))
            word = "==" if isinstance(operator, ast.Is) else "!="
            return [
                _finding(
                    "literal_identity",
                    path,
                    node.lineno,
                    f"`{text}` compares identity with a literal, which equal values need not share",
                    f"Compare with `{word}` instead.",
                )
            ]
    return []


def _is_value_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | bytes | int | float | complex) and not isinstance(
            node.value, bool
        )
    return isinstance(node, ast.JoinedStr | ast.List | ast.Dict | ast.Tuple | ast.Set)


def _reraises(handler: ast.ExceptHandler) -> bool:
    return any(isinstance(n, ast.Raise) and n.exc is None for n in ast.walk(handler))


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
