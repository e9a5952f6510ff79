"""A network guard for tests: any attempt to reach a non-loopback address raises and is recorded.

Why: the pretrained encoders and the importers must work offline; a test that merely passes offline
could still *try* the network and time out in CI. The guard swaps ``socket.socket`` for a real
subclass that refuses non-loopback ``connect``/``connect_ex``/``sendto`` (UDP DNS included) and wraps
``socket.getaddrinfo`` so name lookups of non-local hosts fail too. Loopback stays allowed (Redis, a
local test HTTP server). Use the ``no_network`` fixture; ``attempts`` lists what was refused.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Iterator

import pytest

_REAL_SOCKET = socket.socket
_REAL_GETADDRINFO = socket.getaddrinfo
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class NetworkAccessError(RuntimeError):
    """Raised by the guard instead of touching the network."""


class NetworkGuard:
    """Records refused attempts while installed."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def refuse(self, what: str) -> None:
        self.attempts.append(what)
        raise NetworkAccessError(f"network access attempted in a test: {what}")


def _is_local_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host)
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _make_socket_class(guard: NetworkGuard) -> type[socket.socket]:
    class GuardedSocket(_REAL_SOCKET):  # a real socket subclass, not a mock
        def _check(self, address: Any, op: str) -> None:
            if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
                if not _is_local_host(address[0]):
                    guard.refuse(f"{op} {address[0]}:{address[1]}")

        def connect(self, address: Any) -> None:
            self._check(address, "connect")
            return super().connect(address)

        def connect_ex(self, address: Any) -> int:
            self._check(address, "connect_ex")
            return super().connect_ex(address)

        def sendto(self, data: Any, *args: Any) -> int:
            self._check(args[-1], "sendto")
            return super().sendto(data, *args)

    return GuardedSocket


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Install the guard for one test; yields it so the test can assert ``guard.attempts == []``."""
    guard = NetworkGuard()

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local_host(host):
            guard.refuse(f"getaddrinfo {host}")
        return _REAL_GETADDRINFO(host, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", _make_socket_class(guard))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield guard
