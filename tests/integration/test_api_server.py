"""The API as `agent-engine serve` runs it: a real uvicorn process on a loopback port, spoken to
by ordinary clients (the standard library's ``urllib``, which writes the whole body before it
reads anything)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.processes import clean_env, free_port, running

pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 1_048_576  # the default limit


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `agent-engine serve` on SQLite for the whole module; yields its base URL."""
    workdir = tmp_path_factory.mktemp("serve")
    (workdir / "workspaces").mkdir()
    port = free_port()
    env = clean_env(
        AGENT_ENGINE_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'engine.db'}",
        AGENT_ENGINE_EMBEDDED_WORKER="false",
        AGENT_ENGINE_WORKSPACE_ROOTS=str(workdir / "workspaces"),
        AGENT_ENGINE_LOG_LEVEL="warning",
    )
    with running(["agent_engine", "serve", "--port", str(port)], workdir, env, port) as url:
        yield url


@dataclass(frozen=True)
class Refusal:
    code: int
    headers: Message
    body: bytes


def post_with_urllib(url: str, data: Any) -> Refusal:
    """POST ``data`` with urllib and return the HTTP error it must raise (a connection error
    or a success fails the test)."""
    request = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    with raised.value as error:
        return Refusal(error.code, error.headers, error.read())


@pytest.mark.parametrize("size", [1_500_000, 6_000_000])
def test_urllib_reads_the_413_of_an_oversized_body(server: str, size: int) -> None:
    refusal = post_with_urllib(f"{server}/v1/agent-runs", b"x" * size)
    assert refusal.code == 413
    assert refusal.headers["content-type"].startswith("application/problem+json")
    assert refusal.headers["connection"] == "close"
    problem = json.loads(refusal.body)
    assert problem["code"] == "payload_too_large"
    assert problem["status"] == 413
    assert str(MAX_BODY_BYTES) in problem["detail"]


def test_urllib_reads_the_413_of_an_oversized_chunked_body(server: str) -> None:
    # An iterable body goes out with Transfer-Encoding: chunked, without Content-Length.
    chunks = (b"x" * 65_536 for _ in range(48))
    refusal = post_with_urllib(f"{server}/v1/agent-runs", chunks)
    assert refusal.code == 413
    assert json.loads(refusal.body)["code"] == "payload_too_large"


def test_server_still_answers_after_refusing_oversized_bodies(server: str) -> None:
    assert post_with_urllib(f"{server}/v1/agent-runs", b"x" * 3_000_000).code == 413
    body = json.dumps({"goal": "fits", "steps": [{"step_type": "noop"}]}).encode()
    request = urllib.request.Request(
        f"{server}/v1/agent-runs", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201
        assert json.loads(response.read())["goal"] == "fits"


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers["content-type"], response.read()


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_the_server_itself(server: str, page: str) -> None:
    status, content_type, html = _get(server + page)
    assert status == 200 and content_type.startswith("text/html")
    urls = _asset_urls(html.decode())
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, html
    for url in urls:
        assert url.startswith("/"), f"{page} references {url}"
        asset_status, asset_type, asset = _get(server + url)
        assert asset_status == 200, url
        assert asset, url
        if url.endswith(".js"):
            assert "javascript" in asset_type, (url, asset_type)
        if url.endswith(".css"):
            assert asset_type.startswith("text/css"), (url, asset_type)


def test_docs_page_points_at_the_served_openapi_document(server: str) -> None:
    _, _, html = _get(server + "/docs")
    assert "/openapi.json" in html.decode()
    status, content_type, document = _get(server + "/openapi.json")
    assert status == 200 and content_type.startswith("application/json")
    assert json.loads(document)["info"]["title"]


def test_oauth_redirect_page_is_served(server: str) -> None:
    status, content_type, html = _get(server + "/docs/oauth2-redirect")
    assert status == 200 and content_type.startswith("text/html")
    assert b"oauth2" in html.lower()


def test_packaged_assets_exist_beside_their_licences() -> None:
    import agent_engine.api

    static = Path(agent_engine.api.__file__).parent / "static"
    names = {p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file()}
    assert any("LICENSE" in name for name in names if name.startswith("swagger-ui")), names
    assert any("LICENSE" in name for name in names if name.startswith("redoc")), names
