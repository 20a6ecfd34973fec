"""The vendored OpenAI encodings: same ranks as tiktoken's own files, same tokens, no download."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from agent_engine.llm.vendored_encodings import (
    VENDORED_ENCODINGS,
    EncodingDataError,
    load_encoding,
    parse_compact_ranks,
    preload_encodings,
)

# The SHA-256 tiktoken 0.14.0 expects of o200k_base.tiktoken and cl100k_base.tiktoken
# (``expected_hash`` in tiktoken_ext/openai_public.py): rank files of lines "<base64> <rank>".
TIKTOKEN_FILE_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
RANK_COUNTS = {"o200k_base": 199_998, "cl100k_base": 100_256}
# Vectors from tiktoken's own test suite (tests/test_encoding.py) for cl100k_base, and for
# o200k_base the "hello world" vector published with OpenAI's harmony and other tokenizer ports.
CL100K_VECTORS = [
    ("hello world", [15339, 1917]),
    ("rer", [38149]),
    ("'rer", [2351, 81]),
    ("today\n ", [31213, 198, 220]),
    ("today\n \n", [31213, 27907]),
    ("today\n  \n", [31213, 14211]),
    (" \x850", [220, 126, 227, 15]),
    ("👍", [9468, 239, 235]),
]
O200K_VECTORS = [("hello world", [24912, 2375])]


def _raw(name: str) -> dict[str, object]:
    data = resources.files("agent_engine.llm").joinpath("encodings", f"{name}.json.gz")
    return json.loads(gzip.decompress(data.read_bytes()))  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", VENDORED_ENCODINGS)
def test_vendored_ranks_are_the_files_tiktoken_would_download(name: str) -> None:
    ranks = parse_compact_ranks(str(_raw(name)["bpe_ranks"]))
    assert len(ranks) == RANK_COUNTS[name]
    assert sorted(ranks.values()) == list(range(RANK_COUNTS[name]))
    # Rebuilt in tiktoken's own file format, the ranks hash to what tiktoken checks downloads by.
    as_tiktoken_file = "".join(
        f"{base64.b64encode(token).decode()} {rank}\n"
        for token, rank in sorted(ranks.items(), key=lambda item: item[1])
    )
    assert hashlib.sha256(as_tiktoken_file.encode()).hexdigest() == TIKTOKEN_FILE_SHA256[name]


@pytest.mark.parametrize(("text", "tokens"), CL100K_VECTORS)
def test_cl100k_base_encodes_tiktokens_reference_vectors(text: str, tokens: list[int]) -> None:
    assert load_encoding("cl100k_base").encode(text) == tokens


@pytest.mark.parametrize(("text", "tokens"), O200K_VECTORS)
def test_o200k_base_encodes_reference_vectors(text: str, tokens: list[int]) -> None:
    assert load_encoding("o200k_base").encode(text) == tokens


def test_special_tokens_and_vocabulary_sizes_match_openais_encodings() -> None:
    o200k, cl100k = load_encoding("o200k_base"), load_encoding("cl100k_base")
    assert (o200k.eot_token, o200k.n_vocab) == (199_999, 200_019)
    assert (cl100k.eot_token, cl100k.n_vocab) == (100_257, 100_277)
    assert cl100k.encode("hello <|endoftext|>", allowed_special="all") == [15339, 220, 100257]
    assert o200k.decode(o200k.encode("请考试我的软件！12345")) == "请考试我的软件！12345"


def test_an_encoding_is_built_once_per_process() -> None:
    assert load_encoding("o200k_base") is load_encoding("o200k_base")


def test_unknown_encoding_names_are_refused() -> None:
    with pytest.raises(KeyError, match="p50k_base"):
        load_encoding("p50k_base")


def test_malformed_rank_lines_are_refused() -> None:
    with pytest.raises(EncodingDataError, match="rank line 1"):
        parse_compact_ranks("IQ== 0\n")


_OFFLINE_PROBE = """
import socket, sys

def refuse(*args, **kwargs):
    raise AssertionError("network access attempted")

socket.socket.connect = refuse
socket.create_connection = refuse
from agent_engine.llm.vendored_encodings import load_encoding
print(load_encoding("o200k_base").encode("hello world"), load_encoding("cl100k_base").n_vocab)
"""


def test_loading_never_reads_or_fills_tiktokens_download_cache(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "DATA_GYM_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[24912,", "2375]", "100277"]
    assert list(cache.iterdir()) == []


def test_preloading_builds_every_vendored_encoding() -> None:
    preload_encodings()
    assert [load_encoding(name).name for name in VENDORED_ENCODINGS] == list(VENDORED_ENCODINGS)
