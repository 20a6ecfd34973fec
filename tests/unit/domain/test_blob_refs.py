"""Moving large strings out of a document and back: only strings over the threshold move, the
stored form reads back exactly, and a look-alike reference in the data stays data."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from agent_engine.domain.blob_refs import (
    MissingBlobError,
    expand,
    externalize,
    needs_expanding,
    referenced_blobs,
)

BIG = "é" * 600  # 1200 UTF-8 bytes in 600 characters: the threshold counts bytes


def _contents(blobs: dict[str, bytes]) -> dict[str, str]:
    return {digest: data.decode() for digest, data in blobs.items()}


def test_strings_over_the_threshold_become_references_by_their_sha256() -> None:
    document = {"content": BIG, "small": "x" * 100, "list": [BIG, 1, None]}
    stored = externalize(document, threshold=1000)
    digest = hashlib.sha256(BIG.encode()).hexdigest()
    assert stored.document == {
        "content": {"$blob": digest, "size": 1200},
        "small": "x" * 100,
        "list": [{"$blob": digest, "size": 1200}, 1, None],
    }
    assert stored.blobs == {digest: BIG.encode()}  # the same text twice: one blob
    assert referenced_blobs(stored.document) == {digest}
    assert expand(stored.document, _contents(stored.blobs)) == document


def test_a_string_at_the_threshold_stays_inline() -> None:
    assert externalize({"s": "a" * 64}, threshold=64).blobs == {}
    assert externalize({"s": "a" * 65}, threshold=64).blobs != {}


@pytest.mark.parametrize(
    "document",
    [
        {"$blob": "0" * 64, "size": 1},
        {"$$blob": 1, "$$$blob": [{"$blob": "x"}], "blob": 2, "$blobs": 3},
        [{"nested": {"$blob": None}}],
    ],
)
def test_look_alike_references_read_back_as_data(document: Any) -> None:
    stored = externalize(document, threshold=1 << 20)
    assert stored.blobs == {}
    assert referenced_blobs(stored.document) == set()
    assert needs_expanding(stored.document)
    assert expand(stored.document, {}) == document


def test_a_plain_document_needs_no_expanding() -> None:
    document = {"a": [1, {"b": "text"}], "$ref": "steps.1.output"}
    assert not needs_expanding(externalize(document, threshold=64).document)


def test_a_reference_to_a_missing_blob_is_an_error_not_a_silent_gap() -> None:
    stored = externalize({"content": BIG}, threshold=64)
    with pytest.raises(MissingBlobError):
        expand(stored.document, {})
