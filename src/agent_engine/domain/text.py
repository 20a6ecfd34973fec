"""Values every database can store: Python's JSON parser accepts strings that PostgreSQL (and
UTF-8) cannot, and NaN and infinities, which JSON itself has no way to write."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, model_validator

TEXT_PROBLEM = "text must not contain NUL characters or lone surrogates"
NUMBER_PROBLEM = "numbers must be finite (JSON has no NaN or Infinity)"


def find_unstorable(value: Any, path: str = "") -> str | None:
    """The path of the first string holding a NUL or a lone surrogate, or of the first NaN or
    infinity, or None if all are fine.

    PostgreSQL refuses NUL in text and JSONB, a lone surrogate is not UTF-8 at all, and a NaN
    could be neither hashed (canonical JSON refuses it) nor stored: refusing them at the door turns
    what would be a database error into a clear 422.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "value")
    if isinstance(value, str):
        if "\x00" in value:
            return path or "value"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "value"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_unstorable(key, path) or find_unstorable(
                item, f"{path}.{key}" if path else str(key)
            )
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_unstorable(item, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None


class StorableModel(BaseModel):
    """A request body that refuses strings no database can store, naming where they are."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        where = find_unstorable(data)
        if where is not None:
            raise ValueError(f"{where}: {TEXT_PROBLEM}, and {NUMBER_PROBLEM}")
        return data
