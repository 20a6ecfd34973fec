"""Large strings of a recorded document moved out to content-addressed blobs, and put back.

A string whose UTF-8 form is longer than the threshold is stored once, keyed by the SHA-256 of
its bytes, and the document holds ``{"$blob": "<sha256>", "size": <bytes>}`` in its place. Hashes
are always taken over the full document (before this), so no hash depends on the threshold.

The stored form must be read back unambiguously, even when a step's output itself holds an
object with a ``"$blob"`` key (an MCP tool may answer anything): every key made of one or more
``$`` followed by ``blob`` gets one more ``$`` when stored and loses it when read. In a stored
document an object with the key ``"$blob"`` is therefore always a reference.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BLOB_KEY = "$blob"
_ESCAPED = re.compile(r"\$+blob")  # keys that need one more "$" when stored


@dataclass
class Externalized:
    """A document as stored, and the blobs (hash → UTF-8 bytes) it references."""

    document: Any
    blobs: dict[str, bytes] = field(default_factory=dict)


def blob_reference(digest: str, size: int) -> dict[str, Any]:
    """The object that stands for a blob in a stored document."""
    return {BLOB_KEY: digest, "size": size}


def externalize(document: Any, threshold: int) -> Externalized:
    """``document`` as stored: strings longer than ``threshold`` UTF-8 bytes replaced by
    references (their blobs collected), reference-like keys escaped."""
    found: dict[str, bytes] = {}
    return Externalized(_out(document, threshold, found), found)


def _out(value: Any, threshold: int, found: dict[str, bytes]) -> Any:
    if isinstance(value, str):
        # A character is at least one UTF-8 byte: a short string needs no encoding to know.
        if len(value) <= threshold // 4 or len(value.encode("utf-8")) <= threshold:
            return value
        data = value.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        found[digest] = data
        return blob_reference(digest, len(data))
    if isinstance(value, dict):
        return {
            ("$" + key if isinstance(key, str) and _ESCAPED.fullmatch(key) else key): _out(
                item, threshold, found
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_out(item, threshold, found) for item in value]
    return value


def referenced_blobs(stored: Any) -> set[str]:
    """The hashes of the blobs a stored document references."""
    found: set[str] = set()
    _collect(stored, found)
    return found


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        digest = value.get(BLOB_KEY)
        if isinstance(digest, str):
            found.add(digest)
            return
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)


def needs_expanding(stored: Any) -> bool:
    """Whether a stored document holds a reference or an escaped key (most hold neither)."""
    if isinstance(stored, dict):
        return any(
            (isinstance(key, str) and key.endswith("blob") and key.startswith("$"))
            or needs_expanding(item)
            for key, item in stored.items()
        )
    if isinstance(stored, list):
        return any(needs_expanding(item) for item in stored)
    return False


class MissingBlobError(LookupError):
    """A stored document references a blob that is not stored."""


def expand(stored: Any, contents: dict[str, str]) -> Any:
    """The full document a stored one stands for (``contents``: blob hash → its text)."""
    if isinstance(stored, dict):
        digest = stored.get(BLOB_KEY)
        if isinstance(digest, str):
            if digest not in contents:
                raise MissingBlobError(f"blob {digest} is referenced but not stored")
            return contents[digest]
        return {
            (key[1:] if isinstance(key, str) and _ESCAPED.fullmatch(key) else key): expand(
                item, contents
            )
            for key, item in stored.items()
        }
    if isinstance(stored, list):
        return [expand(item, contents) for item in stored]
    return stored


# The columns of ``steps`` whose documents may hold blob references: the input as planned (an
# edit's new content), as resolved at the claim, what its approver is shown (an edit's diff),
# and the output.
BLOBBED_STEP_COLUMNS = ("input_data", "resolved_input", "preview", "output_data")
# The columns of ``llm_calls`` whose documents may: the request (with the body sent on the
# wire) and the response (with the body received).
BLOBBED_CALL_COLUMNS = ("request", "response")
# A plan version's document (its steps' inputs), and what an approver was shown (a plan, an
# edit's diff).
BLOBBED_PLAN_COLUMNS = ("document",)
BLOBBED_APPROVAL_COLUMNS = ("shown",)
# An audit event's payload: a plan's creation carries the plan, an approval what was shown, an
# edit's outcome its diff. The event's hash is of the whole payload, like every other hash.
BLOBBED_EVENT_COLUMNS = ("payload",)
# Every table whose rows may reference blobs, and the columns that may: what the write path
# externalizes, what every reader expands, and what a blob collection must read to know which
# blobs are still referenced.
BLOBBED_COLUMNS: dict[str, tuple[str, ...]] = {
    "steps": BLOBBED_STEP_COLUMNS,
    "llm_calls": BLOBBED_CALL_COLUMNS,
    "plans": BLOBBED_PLAN_COLUMNS,
    "approvals": BLOBBED_APPROVAL_COLUMNS,
    "audit_events": BLOBBED_EVENT_COLUMNS,
}


def whole_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], contents: dict[str, str]
) -> list[dict[str, Any]]:
    """Rows as stored, with the documents of ``columns`` whole again (``contents``: hash →
    text)."""
    whole = [dict(row) for row in rows]
    for row in whole:
        for column in columns:
            if row.get(column) is not None:
                row[column] = expand(row[column], contents)
    return whole
