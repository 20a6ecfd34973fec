"""The offline model's answer to a propose_edit request: a deterministic edit for simple cases.

It proposes, in this order: the replacement the instruction spells out (``replace `a` with
`b```), the fenced content the instruction gives for a file that does not exist yet, or the fix
of a problem its own analysis knows for certain (an unused import, a bare ``except:``, ``is``
with a literal) in the files shown. With nothing sensible to propose it says so in an answer
without ``path`` or ``operation``, which the step refuses by name: never a made-up edit.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

from agent_engine.llm.edit_prompts import EditableFile, EditPrompt
from agent_engine.llm.offline_analysis import is_python_path, parse_python
from agent_engine.llm.offline_findings import Finding
from agent_engine.llm.offline_python_checks import likely_bugs, unused_imports

_SPELLED_REPLACE_RE = re.compile(
    r"\b(?:replace|change)\s+(?P<q>[`\"'])(?P<old>.+?)(?P=q)\s+(?:with|to|by|into)\s+"
    r"(?P<r>[`\"'])(?P<new>.*?)(?P=r)",
    re.IGNORECASE | re.DOTALL,
)
_FENCE_RE = re.compile(r"^(?P<fence>`{3,})[^`\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
_SUBJECT_RE = re.compile(r"`([^`]+)`")
# Which fixable kinds an instruction asks for, by the words it uses.
_KIND_WORDS = {
    "unused_import": re.compile(r"\bunused\b|\bimports?\b", re.IGNORECASE),
    "bare_except": re.compile(r"\bbare\b|\bexcept\b", re.IGNORECASE),
    "literal_identity": re.compile(r"\bidentity\b|\bliterals?\b|`is`|\s==\s", re.IGNORECASE),
}
_GENERIC_RE = re.compile(r"\b(fix|clean\w*|tidy|improve|lint|problems?|issues?)\b", re.IGNORECASE)
_FIX_ORDER = ("bare_except", "literal_identity", "unused_import")


def propose_edit_answer(prompt: EditPrompt) -> dict[str, Any]:
    """The edit answer for ``prompt`` (the step's JSON shape), or a no-edit answer saying why."""
    for propose in (_spelled_replacement, _given_content, _known_fix):
        answer = propose(prompt)
        if answer is not None:
            return answer
    names = ", ".join(file.path for file in prompt.files) or "no files"
    return {
        "rationale": "The offline model has no edit to propose for this instruction in "
        f"{names}: it can apply a replacement the instruction spells out (replace `old` with "
        "`new`), write fenced content to a new file, or fix an unused import, a bare except or "
        "an identity comparison with a literal that it finds in the files.",
    }


def _edit(path: str, operation: str, rationale: str, **fields: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"path": path, "operation": operation, "rationale": rationale}
    for name in ("old", "new", "content", "diff"):
        answer[name] = fields.get(name)
    return answer


def _named_first(prompt: EditPrompt) -> list[EditableFile]:
    """The files the instruction names, else every file shown, in the order given."""
    named = [file for file in prompt.files if file.path in prompt.instruction]
    return named or list(prompt.files)


def _spelled_replacement(prompt: EditPrompt) -> dict[str, Any] | None:
    match = _SPELLED_REPLACE_RE.search(prompt.instruction)
    if match is None:
        return None
    old, new = match["old"], match["new"]
    for file in _named_first(prompt):
        if file.content is not None and file.content.count(old) == 1:
            rationale = f"Replaces `{old}` with `{new}` in {file.path}, as the instruction asks."
            return _edit(file.path, "replace", rationale, old=old, new=new)
    return None


def _given_content(prompt: EditPrompt) -> dict[str, Any] | None:
    fence = _FENCE_RE.search(prompt.instruction)
    absent = [file for file in _named_first(prompt) if file.content is None]
    if fence is None or not absent:
        return None
    path = absent[0].path
    rationale = f"Creates {path} with the content the instruction gives."
    return _edit(path, "write", rationale, content=fence["body"])


def _known_fix(prompt: EditPrompt) -> dict[str, Any] | None:
    wanted = [kind for kind in _FIX_ORDER if _KIND_WORDS[kind].search(prompt.instruction)]
    if not wanted and _GENERIC_RE.search(prompt.instruction):
        wanted = list(_FIX_ORDER)
    subjects = set(_SUBJECT_RE.findall(prompt.instruction))
    for kind in wanted:
        for file in _named_first(prompt):
            if file.content is None or not is_python_path(file.path):
                continue
            for finding in _findings(file.path, file.content, kind):
                # An instruction that quotes a name (`os`) means that finding, not another one.
                if subjects and not subjects & set(_SUBJECT_RE.findall(finding.message)):
                    continue
                answer = _FIXES[kind](file, finding)
                if answer is not None:
                    return answer
    return None


def _findings(path: str, content: str, kind: str) -> list[Finding]:
    try:
        tree = parse_python(content, path)
    except (SyntaxError, ValueError):
        return []
    found = unused_imports(path, tree, content.split("\n")) + likely_bugs(path, tree)
    return sorted((f for f in found if f.kind == kind), key=lambda f: f.line or 0)


def _line_edit(
    file: EditableFile, line_number: int, rewrite: Callable[[str], str | None], rationale: str
) -> dict[str, Any] | None:
    """A replace that rewrites line ``line_number`` (1-based), with as many neighbouring lines
    as ``old`` needs to occur exactly once; None when ``rewrite`` has nothing to change."""
    text = file.content or ""
    lines = text.split("\n")
    if not 1 <= line_number <= len(lines):
        return None
    line = lines[line_number - 1]
    changed = rewrite(line)
    if changed is None or changed == line:
        return None
    # Lines with their newlines; the edited line is joined to its context on both sides.
    kept = [piece + "\n" for piece in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    index = line_number - 1
    start, end = index, index + 1
    grow_end = True
    while _occurrences(text, "".join(kept[start:end])) != 1:
        if start == 0 and end == len(kept):
            return None
        # Context is added below and above in turn, so the snippet stays centred on the line.
        if (grow_end and end < len(kept)) or start == 0:
            end += 1
        else:
            start -= 1
        grow_end = not grow_end
    old = "".join(kept[start:end])
    newline = "\n" if kept[index].endswith("\n") else ""
    replacement = "" if changed == "" else changed + newline
    new = "".join(kept[start:index]) + replacement + "".join(kept[index + 1 : end])
    return _edit(file.path, "replace", rationale, old=old, new=new)


def _occurrences(text: str, needle: str) -> int:
    # Overlapping matches count, as edit_file counts them: 'aa' in 'aaa' is not unique.
    count, at = 0, text.find(needle)
    while at != -1:
        count += 1
        at = text.find(needle, at + 1)
    return count


def _fix_unused_import(file: EditableFile, finding: Finding) -> dict[str, Any] | None:
    names = _SUBJECT_RE.findall(finding.message)
    if not names or finding.line is None:
        return None
    unused = names[0]

    def rewrite(line: str) -> str | None:
        try:
            statement = ast.parse(line.strip()).body
        except SyntaxError:
            return None  # an import over several lines: not a one-line fix
        if len(statement) != 1 or not isinstance(statement[0], ast.Import | ast.ImportFrom):
            return None
        node = statement[0]
        node.names = [alias for alias in node.names if alias.name != unused]
        indent = line[: len(line) - len(line.lstrip())]
        return indent + ast.unparse(node) if node.names else ""

    where = f"line {finding.line} of {file.path}"
    rationale = f"Removes the unused import of `{unused}` ({where}): nothing in the file uses it."
    return _line_edit(file, finding.line, rewrite, rationale)


def _fix_bare_except(file: EditableFile, finding: Finding) -> dict[str, Any] | None:
    def rewrite(line: str) -> str | None:
        if line.count("except:") != 1:
            return None
        return line.replace("except:", "except Exception:")

    rationale = (
        f"Catches `Exception` instead of everything at line {finding.line} of {file.path}: a bare "
        "`except:` also swallows KeyboardInterrupt and SystemExit."
    )
    return _line_edit(file, finding.line or 0, rewrite, rationale)


def _fix_literal_identity(file: EditableFile, finding: Finding) -> dict[str, Any] | None:
    def rewrite(line: str) -> str | None:
        if line.count(" is not ") == 1:
            return line.replace(" is not ", " != ")
        if line.count(" is ") == 1:
            return line.replace(" is ", " == ")
        return None

    rationale = (
        f"Compares by value at line {finding.line} of {file.path}: `is` with a literal tests "
        "identity, which equal values need not share."
    )
    return _line_edit(file, finding.line or 0, rewrite, rationale)


_FIXES: dict[str, Callable[[EditableFile, Finding], dict[str, Any] | None]] = {
    "unused_import": _fix_unused_import,
    "bare_except": _fix_bare_except,
    "literal_identity": _fix_literal_identity,
}
