"""The guard that keeps offline tests offline refuses remote hosts and lets loopback through."""

from __future__ import annotations

import socket

import pytest

from tests.network_guard import refuse_remote_connections


def test_a_remote_connection_or_lookup_fails_and_loopback_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refuse_remote_connections(monkeypatch, "the code under test")
    with pytest.raises(AssertionError, match="the code under test tried to use the network"):
        socket.getaddrinfo("example.com", 443)
    with socket.socket() as remote, pytest.raises(AssertionError, match=r"192\.0\.2\.1"):
        remote.connect(("192.0.2.1", 443))  # TEST-NET-1: refused before any packet is sent
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.socket() as local:
            local.connect(server.getsockname())  # the suite's own loopback services stay open
        assert socket.getaddrinfo("localhost", 80)
