"""Whether a goal asks for changes to the workspace (fix, remove, add, update…), not for a look.

A change verb counts where a request puts it: at the start of a clause ("Fix the parser", "Find and
remove dead code", "Could you update the docs?"). A noun such as "Summarize the changes" or
"suggest fixes" does not ask for a change.
"""

from __future__ import annotations

import re

_CHANGE_VERBS = (
    "add", "apply", "bump", "change", "clean", "convert", "correct", "create", "delete",
    "document", "drop", "edit", "extract", "fix", "format", "implement", "improve", "insert",
    "introduce", "migrate", "modify", "move", "patch", "refactor", "remove", "rename", "replace",
    "resolve", "rewrite", "simplify", "tidy", "update", "upgrade", "write",
)  # fmt: skip
# Words after which a verb still starts the request: "and fix", "then remove", "can you add".
_LEAD_INS = ("and", "then", "also", "please", "you", "let's", "lets")


def _forms(verb: str) -> list[str]:
    """The base form and the -ing form (``tidy`` → ``tidying``, ``drop`` → ``dropping``)."""
    if verb.endswith("e"):
        return [verb, verb[:-1] + "ing"]
    return [verb, verb + ("ping" if verb == "drop" else "ing")]


_VERB_PATTERN = "|".join(sorted({form for verb in _CHANGE_VERBS for form in _forms(verb)}))
_LEAD_PATTERN = "|".join(re.escape(word) for word in _LEAD_INS)
_CHANGE_REQUEST_RE = re.compile(
    rf"(?:^|[.;:!?,()\n]|\b(?:{_LEAD_PATTERN}))\s*(?:{_VERB_PATTERN})\b",
    re.IGNORECASE,
)


def asks_for_changes(goal: str) -> bool:
    """Whether ``goal`` asks for a change to the workspace (a change verb starting a clause)."""
    return _CHANGE_REQUEST_RE.search(goal.strip()) is not None
