"""Canonical JSON and content hashes: the basis of every recorded hash (DESIGN.md §8)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson


def json_default(value: Any) -> Any:
    """JSON for the values our documents hold beyond JSON's own (exact decimals, ids, times)."""
    if isinstance(value, Decimal):
        # Exact decimal text, so that hashing money never goes through a float.
        return format(value, "f")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, UTF-8, no insignificant whitespace. NaN and infinities raise ValueError: JSON
    has no way to write them, and a hash must never stand for a value that cannot be stored."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=json_default,
    ).encode("utf-8")


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
    return hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value``."""
    return sha256_hex(canonical_json(value))
