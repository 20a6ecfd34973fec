"""OpenAI's tokenizers built from encoding files shipped with the package, never downloaded.

``tiktoken.get_encoding`` fetches its rank files from the internet on first use; here the same
ranks come from ``encodings/`` (vendored from the npm package ``tiktoken`` 1.0.22, see its README)
and are handed to ``tiktoken.Encoding``'s documented constructor. Each encoding is built once per
process, on first use, under a lock.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tiktoken

VENDORED_ENCODINGS: tuple[str, ...] = ("o200k_base", "cl100k_base")
# The compact rank form starts every line with this marker, then the first rank of the line.
_COMPACT_MARKER = "!"

_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding] = {}


class EncodingDataError(ValueError):
    """A vendored encoding file does not have the expected shape (a packaging defect)."""


def parse_compact_ranks(text: str) -> dict[bytes, int]:
    """Mergeable ranks from the compact form: lines of ``! <first rank> <base64 token> …``,
    the n-th token of a line ranked ``first rank + n``."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        marker, first, *tokens = line.split(" ")
        if marker != _COMPACT_MARKER or not first.isdigit():
            raise EncodingDataError(f"rank line {number} is not '! <first rank> <tokens>…'")
        offset = int(first)
        for position, token in enumerate(tokens):
            ranks[base64.b64decode(token, validate=True)] = offset + position
    return ranks


def _read(name: str) -> dict[str, Any]:
    data_file = resources.files("agent_engine.llm").joinpath("encodings", f"{name}.json.gz")
    payload = json.loads(gzip.decompress(data_file.read_bytes()))
    if not isinstance(payload, dict) or not {"pat_str", "special_tokens", "bpe_ranks"} <= set(
        payload
    ):
        raise EncodingDataError(f"{name}: expected pat_str, special_tokens and bpe_ranks")
    return payload


def _build(name: str) -> tiktoken.Encoding:
    import tiktoken  # imported on first use: commands that never count tokens skip it

    payload = _read(name)
    special_tokens = {str(k): int(v) for k, v in dict(payload["special_tokens"]).items()}
    return tiktoken.Encoding(
        name=name,
        pat_str=str(payload["pat_str"]),
        mergeable_ranks=parse_compact_ranks(str(payload["bpe_ranks"])),
        special_tokens=special_tokens,
    )


def load_encoding(name: str) -> tiktoken.Encoding:
    """The vendored encoding ``name`` (one of VENDORED_ENCODINGS), built on first use and then
    shared by the whole process."""
    if name not in VENDORED_ENCODINGS:
        raise KeyError(f"no vendored encoding named {name!r}")
    encoding = _loaded.get(name)
    if encoding is not None:
        return encoding
    with _lock:
        encoding = _loaded.get(name)
        if encoding is None:
            encoding = _build(name)
            _loaded[name] = encoding
        return encoding


def preload_encodings() -> None:
    """Build every vendored encoding now (a fraction of a second each), so that the first routed
    call does not pay for it; meant for a start-up thread, never the event loop."""
    for name in VENDORED_ENCODINGS:
        load_encoding(name)
