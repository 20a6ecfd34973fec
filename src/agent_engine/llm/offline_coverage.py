"""Which listed modules no test covers, decided by what the test modules import and mention.

A module counts as tested when a test module imports it (``import pkg.mod``, ``from pkg import
mod``, ``from pkg.mod import x``, relative imports inside test packages), names it in a dotted
reference (``pkg.mod.attr``, ``"pkg.mod"`` as given to ``mock.patch``), uses a name that a read
package ``__init__`` re-exports from it, or when a test module is named after it (``test_mod.py``).
Private modules are covered through the public ones that use them, so they are not reported.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from agent_engine.llm.offline_analysis import (
    is_private_module,
    is_python_path,
    is_test_module,
    is_test_path,
    parse_python,
)
from agent_engine.llm.offline_findings import Finding

# A module smaller than this that nobody read holds constants or glue, not logic worth a test.
MIN_UNREAD_MODULE_BYTES = 256
_NOT_MODULES = {"__init__.py", "__main__.py", "setup.py", "conftest.py", "noxfile.py", "manage.py"}
_NOT_MODULE_DIRS = {
    "migrations", "docs", "doc", "examples", "example", "samples", "scripts", "benchmarks",
    "bench",
}  # fmt: skip
_DOTTED_RE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
_MAX_PARSE_RETRIES = 8

Parts = tuple[str, ...]


@dataclass(frozen=True)
class ListedFile:
    """A file of the listing, with its content when the analysis was given it."""

    path: str
    size: int | None = None
    content: str | None = None
    complete: bool = False


def find_untested_modules(files: list[ListedFile]) -> list[Finding]:
    """A finding for each module with logic that no test module covers (or one: no tests)."""
    python = [f for f in files if is_python_path(f.path)]
    modules = sorted((f for f in python if _needs_test(f)), key=lambda f: f.path)
    if not modules:
        return []
    tests = [f for f in python if is_test_path(f.path)]
    if not tests:
        message = f"no test files for {len(modules)} modules"
        suggestion = "Add a tests/ directory with a test module for each main module (pytest)."
        return [Finding("no_tests", None, None, message, "warning", suggestion)]
    index = _ModuleIndex([f.path for f in python])
    for package in python:
        if PurePosixPath(package.path).name == "__init__.py" and package.complete:
            index.add_reexports(package.path, package.content or "")
    covered: set[str] = set()
    read = [t for t in tests if t.content is not None]
    for test in read:
        covered |= index.covered_by(test.path, test.content or "")
    named = {_name_key(t.path) for t in tests}
    # Helpers and data under tests/ are read when planned, but only test modules count as unread.
    unread = sum(1 for t in tests if t.content is None and is_test_module(t.path))
    test_dir = _usual_test_dir([t.path for t in tests])
    findings: list[Finding] = []
    for module in modules:
        stem = _name_key(module.path).strip("_")
        if module.path in covered or any(f"_{stem}_" in key for key in named):
            continue
        if not _has_logic(module):
            continue
        findings.append(_finding(module, unread, len(read), test_dir))
    return findings


def _finding(module: ListedFile, unread: int, read: int, test_dir: str) -> Finding:
    stem = PurePosixPath(module.path).stem
    if unread and not read:
        message = (
            f"no test module is named after `{stem}` (the {unread} test modules were not read, "
            "so what they import is not known)"
        )
    elif unread:
        message = (
            f"no test module is named after `{stem}`, and none of the {read} test modules read "
            f"imports it ({unread} not read)"
        )
    else:
        message = f"no test module imports `{stem}` or is named after it"
    names = _public_names(module)
    what = ", ".join(f"`{name}`" for name in names[:3]) if names else "its public functions"
    target = f"{test_dir}/test_{stem}.py" if test_dir else f"test_{stem}.py"
    suggestion = f"Add `{target}` with tests for {what}."
    weight = len((module.content or "").encode()) if module.content else module.size or 0
    return Finding("missing_test", module.path, None, message, "warning", suggestion, 1, weight)


def _needs_test(file: ListedFile) -> bool:
    pure = PurePosixPath(file.path)
    return (
        pure.suffix == ".py"
        and not is_test_path(file.path)
        and not is_private_module(file.path)
        and pure.name not in _NOT_MODULES
        and not any(part in _NOT_MODULE_DIRS or part.startswith(".") for part in pure.parts[:-1])
    )


def _has_logic(module: ListedFile) -> bool:
    if module.content is None or not module.complete:
        return module.size is None or module.size >= MIN_UNREAD_MODULE_BYTES
    tree = parse_leniently(module.content)
    return tree is not None and any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(tree)
    )


def _public_names(module: ListedFile) -> list[str]:
    tree = parse_leniently(module.content) if module.content else None
    if tree is None:
        return []
    kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    return [n.name for n in tree.body if isinstance(n, kinds) and not n.name.startswith("_")]


def _name_key(path: str) -> str:
    return f"_{PurePosixPath(path).stem.lstrip('_')}_"


def _usual_test_dir(paths: list[str]) -> str:
    dirs = Counter(
        str(PurePosixPath(p).parent) for p in paths if PurePosixPath(p).name != "conftest.py"
    )
    if not dirs:
        return ""
    directory, _ = min(dirs.items(), key=lambda item: (-item[1], item[0]))
    return "" if directory == "." else directory


def parse_leniently(source: str) -> ast.Module | None:
    """The module, or as much of its beginning as parses (a file read only in part is cut)."""
    lines = source.split("\n")
    for _ in range(_MAX_PARSE_RETRIES):
        try:
            return parse_python("\n".join(lines))
        except SyntaxError as exc:
            cut = min((exc.lineno or len(lines)) - 1, len(lines) - 1)
            if cut <= 0:
                return None
            lines = lines[:cut]
        except (ValueError, RecursionError, MemoryError):
            return None
    return None


class _ModuleIndex:
    """The listed modules by dotted name, by trailing path parts, and by re-exported names."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = set(paths)
        self.by_dotted: dict[Parts, set[str]] = {}
        self.by_suffix: dict[Parts, set[str]] = {}
        self.by_path: dict[Parts, str] = {}
        for path in sorted(self.paths):
            parts = _module_parts(path)
            self.by_path[parts] = path
            self.by_dotted.setdefault(self.dotted(path), set()).add(path)
            for start in range(len(parts) - 1):
                self.by_suffix.setdefault(parts[start:], set()).add(path)
        self.reexports: dict[Parts, set[str]] = {}

    def dotted(self, path: str) -> Parts:
        """The import name: the module and the package directories (with ``__init__``) above it."""
        parts = _module_parts(path)
        directories = PurePosixPath(path).parent.parts
        top = len(directories)
        while top > 0 and "/".join(directories[:top]) + "/__init__.py" in self.paths:
            top -= 1
        return parts[top:]

    def add_reexports(self, init_path: str, content: str) -> None:
        """Remember which module each name imported by a package ``__init__`` comes from."""
        tree = parse_leniently(content)
        if tree is None:
            return
        package = self.dotted(init_path)
        for node in tree.body:
            if not isinstance(node, ast.ImportFrom):
                continue
            for source in self._import_sources(init_path, node):
                for alias in node.names:
                    self.reexports.setdefault((*package, alias.asname or alias.name), set()).update(
                        source
                    )

    def covered_by(self, test_path: str, content: str) -> set[str]:
        """The modules that a test module's imports and dotted references reach."""
        tree = parse_leniently(content)
        if tree is None:
            return set()
        covered: set[str] = set()
        bound: dict[str, Parts] = {}  # a name the test binds by an import → what it names
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                covered |= self._imported(test_path, node, bound)
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _DOTTED_RE.match(node.value)
            ):
                covered |= self._modules_for(tuple(node.value.split(".")))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain = _attribute_chain(node)
                if chain and chain[0] in bound:
                    covered |= self._modules_for((*bound[chain[0]], *chain[1:]))
        return covered

    def _imported(
        self, importer: str, node: ast.Import | ast.ImportFrom, bound: dict[str, Parts]
    ) -> set[str]:
        """The modules an import statement reaches; records the names it binds in ``bound``."""
        covered: set[str] = set()
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = tuple(alias.name.split("."))
                covered |= self._modules_for(parts)
                bound[alias.asname or parts[0]] = parts if alias.asname else parts[:1]
            return covered
        for source in self._import_sources(importer, node):
            covered |= source
        if node.level == 0 and node.module:
            for alias in node.names:
                bound[alias.asname or alias.name] = (*node.module.split("."), alias.name)
        return covered

    def _import_sources(self, importer: str, node: ast.ImportFrom) -> list[set[str]]:
        """The modules a ``from … import`` names, one set per imported name."""
        if node.level == 0:
            base: Parts = tuple(node.module.split(".")) if node.module else ()
            return [self._modules_for((*base, alias.name)) for alias in node.names]
        directories = PurePosixPath(importer).parent.parts
        if node.level - 1 > len(directories):
            return []
        anchor = directories[: len(directories) - (node.level - 1)]
        module = tuple(node.module.split(".")) if node.module else ()
        sources = []
        for alias in node.names:
            full = (*anchor, *module, alias.name)
            found = {self.by_path[full]} if full in self.by_path else set()
            if not found and (*anchor, *module) in self.by_path:
                found = {self.by_path[(*anchor, *module)]}
            sources.append(found)
        return sources

    def _modules_for(self, name: Parts) -> set[str]:
        """Modules a dotted name reaches: every prefix that is a module or a re-exported name."""
        found: set[str] = set()
        for end in range(1, len(name) + 1):
            prefix = name[:end]
            found |= self.by_dotted.get(prefix, set())
            if end >= 2:
                found |= self.by_suffix.get(prefix, set())
            found |= self.reexports.get(prefix, set())
        return found


def _module_parts(path: str) -> Parts:
    pure = PurePosixPath(path)
    parts = pure.with_suffix("").parts
    return parts[:-1] if pure.name == "__init__.py" else parts


def _attribute_chain(node: ast.Attribute) -> Parts:
    names: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        names.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return ()
    return (current.id, *reversed(names))
