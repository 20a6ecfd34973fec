"""Reading JSON documents back from the database, whatever was stored.

Depth is refused where documents come in (request bodies, plans, step inputs and outputs), but
a database written before that may hold a document nested deeper than the serializers can
write (near 255 levels), which would make every read of its run fail. Such a document is read
as a marker naming its hash instead, so reads still answer.
"""

from __future__ import annotations

import json
from typing import Any

from agent_engine.domain.canonical import sha256_hex
from agent_engine.domain.json_depth import text_exceeds_depth

# Deepest document served as stored: a response wraps a document in at most about ten more
# levels (the audit log's plan events), which stays well under the serializers' limit.
READABLE_DEPTH = 200


def load_document(text: str) -> Any:
    """The stored JSON ``text`` parsed, or a marker if it nests deeper than ``READABLE_DEPTH``."""
    # Fewer brackets in all than the depth allowed: the common case costs two counts.
    if text.count("[") + text.count("{") > READABLE_DEPTH:
        data = text.encode()
        if text_exceeds_depth(data, READABLE_DEPTH):
            return {
                "unreadable": f"stored document nests deeper than {READABLE_DEPTH} levels",
                "sha256": sha256_hex(data),
            }
    return json.loads(text)
