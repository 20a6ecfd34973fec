"""How deep a JSON document nests, as text (before it is parsed) or as parsed values.

Depth counts containers: ``1`` and ``"x"`` are 0 deep, ``{}`` and ``[]`` 1, ``{"a": [1]}`` 2.
Serializers have depth limits of their own (pydantic's and orjson's are near 255), so a document
deeper than that can be stored but not served: the engine refuses such documents where they
come in, which these functions make cheap enough to do on every request and every result.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from itertools import accumulate, count
from typing import Any

# A backslash and the character it escapes: removed first, so that an escaped quote cannot end
# a string (valid JSON has no backslash outside strings).
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
# Opening brackets become 2 and closing ones 0, so that a running sum minus the number of
# brackets seen is the depth at that point, all computed by C-level iterators.
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_CONTAINERS = (dict, list, tuple)


def text_depth(data: bytes) -> int:
    """The deepest nesting of the JSON text ``data``, counting brackets outside strings.

    Exact for valid JSON; for malformed text it is an upper bound of what a parser would reach
    before refusing it, which is all a limit needs.
    """
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    # Only quotes and brackets are left; every other piece between quotes is a string's inside.
    structure = data.translate(None, _NOT_STRUCTURE)
    brackets = b"".join(structure.split(b'"')[0::2]).translate(_STEP)
    return max(map(operator.sub, accumulate(brackets), count(1)), default=0)


def text_exceeds_depth(data: bytes, limit: int) -> bool:
    """Whether the JSON text ``data`` nests deeper than ``limit``; cheap for ordinary bodies,
    which have fewer brackets in all than the limit allows in depth."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    return text_depth(data) > limit


def exceeds_depth(value: Any, limit: int) -> bool:
    """Whether the parsed JSON ``value`` nests deeper than ``limit``; stops at the first
    container past it (iterative, so no document can exhaust the stack)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):  # tuples: values not yet dumped to JSON
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))
    return False
