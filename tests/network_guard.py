"""A guard for tests of code that must never reach the network (a model that must not be
downloaded, an offline model): any connection or name lookup beyond this machine fails the test.

Loopback stays open on purpose: the suite's own background work (a test database dropped on a
thread while the next test runs) talks to the local PostgreSQL, and patching ``socket`` is
process-wide, so refusing loopback too would fail whichever test that work happens to overlap.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _is_local_host(host: Any) -> bool:
    if host is None:
        return True
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def refuse_remote_connections(monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """Fail with "``what`` tried to use the network" on any connection to, or lookup of, a
    host that is not this machine's loopback (Unix sockets are local too)."""
    connect = socket.socket.connect
    lookup = socket.getaddrinfo

    def guarded_connect(sock: socket.socket, address: Any) -> Any:
        if sock.family == socket.AF_UNIX or _is_local_host(address[0]):
            return connect(sock, address)
        raise AssertionError(f"{what} tried to use the network ({address!r})")

    def guarded_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_local_host(host):
            return lookup(host, *args, **kwargs)
        raise AssertionError(f"{what} tried to use the network (looked up {host!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
