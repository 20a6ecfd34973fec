"""Canonical JSON and content hashes: the basis of every recorded hash.

A hash is the SHA-256 (lower-case hex) of the RFC 8785 (JSON Canonicalization Scheme) form of a
document, written by the ``rfc8785`` package. Our documents hold a few values JSON has no type
for; they are mapped to JSON first, by rules an auditor in any language can follow
(``docs/determinism.md`` gives the recipe):

- ``Decimal`` (money): its exact decimal text, never through a float (``Decimal("0.10")`` is
  ``"0.10"``); a NaN or infinite decimal is refused.
- ``UUID``: its lower-case hyphenated text.
- ``datetime``: ISO 8601 text as ``datetime.isoformat`` writes it (``2026-12-01T13:00:00+00:00``).
- object keys that are integers: their decimal text (what storing the document makes of them).
- integers beyond JCS's exact range (±(2**53 - 1)): the IEEE double they parse to, which is
  what any JCS implementation does with such a number read from stored JSON (RFC 8785 §3.2.2.3);
  one too large for a double is refused.
- tuples are arrays. NaN and infinities are refused: JSON cannot write them, and a hash must
  never stand for a value that cannot be stored.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import rfc8785

# The integers RFC 8785 writes exactly (an IEEE double holds every integer up to 2**53).
SAFE_INTEGER = 2**53 - 1


def json_default(value: Any) -> Any:
    """JSON for the values our documents hold beyond JSON's own (exact decimals, ids, times)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"Out of range decimal values are not JSON compliant: {value}")
        # Exact decimal text, so that hashing money never goes through a float.
        return format(value, "f")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def to_json_value(value: Any) -> Any:
    """``value`` with the pre-mapping applied: only JSON's own types remain, as RFC 8785
    serializes them (see the module's docstring for the rules)."""
    if value is None or isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int):
        if -SAFE_INTEGER <= value <= SAFE_INTEGER:
            return value
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"integer {value} is beyond what a JSON number can hold") from None
    if isinstance(value, dict):
        return {_key(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(item) for item in value]
    return json_default(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise TypeError(f"object keys must be text or integers, not {type(key).__name__}")


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical form of ``value`` (after the pre-mapping) as UTF-8 bytes.
    NaN and infinities raise ValueError."""
    return rfc8785.dumps(to_json_value(value))


def wire_json(value: Any) -> str:
    """JSON text for the database (the hot path's documents), written by orjson: the standard
    library's encoder was the largest Python cost of a step's write. Never for hashing (that is
    ``canonical_json``); its values are already hashed, so none is NaN or infinite (which orjson
    would write as null)."""
    try:
        return orjson.dumps(value, default=json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits: the standard library writes them
        return json.dumps(value, default=json_default)


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lower-case hex digits."""
    return hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value``: the one hash every record is given."""
    return sha256_hex(canonical_json(value))
