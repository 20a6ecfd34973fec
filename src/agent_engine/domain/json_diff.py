"""The first place where two JSON documents differ, as data a program can act on.

Used to compare two runs step by step (``engine/comparison.py``): ``first_difference`` walks both
documents in a fixed order (object keys sorted, unless an order of preferred keys is given; list
items by index) and names the first differing leaf by its path, e.g. ``output.content`` or
``input_data.argv[2]``. Values too large to show are given as their content hash and size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent_engine.domain.canonical import canonical_json, sha256_hex

# A value whose canonical JSON is longer than this is shown as {"sha256": …, "size": …}.
MAX_SHOWN_BYTES = 512


class _Absent:
    """A key one document has and the other does not."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


@dataclass(frozen=True)
class Difference:
    """Where two documents first differ; ``expected``/``actual`` as ``shown_value`` gives them
    (``absent``: which side lacks the path, if one does)."""

    path: str
    expected: Any
    actual: Any
    absent: str | None = None  # "expected" | "actual"

    def as_dict(self) -> dict[str, Any]:
        """The difference as JSON values."""
        found: dict[str, Any] = {
            "field": self.path,
            "expected": self.expected,
            "actual": self.actual,
        }
        if self.absent is not None:
            found["absent"] = self.absent
        return found


def shown_value(value: Any, max_bytes: int = MAX_SHOWN_BYTES) -> Any:
    """``value`` itself when small, else its content hash and size (of its canonical JSON)."""
    encoded = canonical_json(value)
    if len(encoded) <= max_bytes:
        return value
    return {"sha256": sha256_hex(encoded), "size": len(encoded)}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _same_kind(expected: Any, actual: Any) -> bool:
    # JSON has one number type; True is not 1 in a document that was written as a boolean.
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool)
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return True
    return type(expected) is type(actual)


def _keys(expected: dict[str, Any], actual: dict[str, Any], first: Sequence[str]) -> list[str]:
    everything = set(expected) | set(actual)
    preferred = [key for key in first if key in everything]
    return preferred + sorted(everything - set(preferred))


def first_difference(
    expected: Any,
    actual: Any,
    path: str = "",
    *,
    first: Sequence[str] = (),
    ignore: Sequence[str] = (),
) -> Difference | None:
    """The first path where ``actual`` differs from ``expected`` (None: equal).

    ``first``: keys of the top-level objects to look at before the others (the fields that
    matter most, e.g. a command's ``exit_code``); ``ignore``: top-level keys never compared
    (values that differ on every run, such as a duration).
    """
    if isinstance(expected, dict) and isinstance(actual, dict):
        return _object_difference(expected, actual, path, first, ignore)
    if isinstance(expected, list) and isinstance(actual, list):
        return _list_difference(expected, actual, path)
    if _same_kind(expected, actual) and expected == actual:
        return None
    return Difference(path, shown_value(expected), shown_value(actual))


def _object_difference(
    expected: dict[str, Any],
    actual: dict[str, Any],
    path: str,
    first: Sequence[str],
    ignore: Sequence[str],
) -> Difference | None:
    for key in _keys(expected, actual, first):
        if key in ignore:
            continue
        where = _join(path, key)
        if key not in expected:
            return Difference(where, None, shown_value(actual[key]), absent="expected")
        if key not in actual:
            return Difference(where, shown_value(expected[key]), None, absent="actual")
        found = first_difference(expected[key], actual[key], where)
        if found is not None:
            return found
    return None


def _list_difference(expected: list[Any], actual: list[Any], path: str) -> Difference | None:
    for index in range(max(len(expected), len(actual))):
        where = f"{path}[{index}]"
        if index >= len(expected):
            return Difference(where, None, shown_value(actual[index]), absent="expected")
        if index >= len(actual):
            return Difference(where, shown_value(expected[index]), None, absent="actual")
        found = first_difference(expected[index], actual[index], where)
        if found is not None:
            return found
    return None
