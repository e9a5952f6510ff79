"""Safe fetching of task data: ``data:`` URLs, http(s) URLs and Label Studio upload paths.

Task data is user-controlled, and the backend runs next to Label Studio, Redis and possibly cloud
metadata endpoints, so a URL in a task must never become a way into the internal network (SSRF):

- ``data:`` URLs are decoded locally, under the same size limit;
- a path (``/data/upload/1/x.png``, ``/data/local-files/?d=...``) is fetched from Label Studio itself,
  with the API token; the token is sent to no other host;
- http(s) URLs must name Label Studio's host or a host on the allowlist (``MMAL_FETCH_ALLOWED_HOSTS``);
  every resolved address must be public (no loopback, private, link-local, multicast, reserved or
  unspecified address) unless the host is Label Studio's own;
- the connection goes to the address that was checked (no second DNS lookup, so no DNS rebinding),
  with the original Host header and TLS server name;
- redirects are followed by hand, each hop checked like the first, at most ``max_redirects``;
- the body is streamed with a byte limit, and the whole fetch has a deadline;
- ``file://`` and every other scheme are refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import httpx

from backend.data import DataError
from backend.encoders.builtin import decode_data_url
from backend.files import write_atomic

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Sequence[str]]


class FetchError(DataError):
    """A task value that cannot (or must not) be fetched; the message names the URL and the reason."""


def _short(url: str) -> str:
    return url if len(url) <= 100 else url[:97] + "..."


def default_resolver(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from None
    # IPv4 first: a dual-stack name then connects the way most servers listen
    return sorted({info[4][0] for info in infos}, key=lambda a: (":" in a, a))


def is_public_address(addr: str) -> bool:
    """True only for globally routable unicast addresses (IPv4-mapped IPv6 judged by its IPv4)."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not (ip.is_multicast or ip.is_reserved or ip.is_loopback
                                       or ip.is_link_local or ip.is_private or ip.is_unspecified)


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """``host`` matches an allowlist entry: exact name, ``*.suffix`` (subdomains and the suffix), or ``*``."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().strip().rstrip(".")
        if not entry:
            continue
        if entry == "*" or entry == host:
            return True
        if entry.startswith("*.") and (host == entry[2:] or host.endswith(entry[1:])):
            return True
    return False


def _origin(url: str) -> tuple[str, str, int]:
    p = urllib.parse.urlsplit(url)
    scheme = p.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"{_short(url)!r}: only http and https URLs can be fetched, not {scheme or 'no'} scheme")
    if not p.hostname:
        raise FetchError(f"{_short(url)!r}: URL has no host")
    if p.username or p.password:
        raise FetchError(f"{_short(url)!r}: URLs with credentials are refused")
    try:
        port = p.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise FetchError(f"{_short(url)!r}: invalid port") from None
    return scheme, p.hostname.lower().rstrip("."), port


@dataclass
class FetchPolicy:
    """Limits of one fetcher. ``label_studio_url`` is the only host whose (possibly internal) address is
    accepted and the only one that gets the token."""

    label_studio_url: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    max_bytes: int = 20_000_000
    timeout: float = 10.0
    max_redirects: int = 3


class Fetcher:
    """Fetches task values under a :class:`FetchPolicy`; optionally keeps fetched bytes in a disk cache.

    ``auth_headers`` returns the headers that authenticate against Label Studio (e.g.
    ``{"Authorization": "Token ..."}``); it is called lazily and only for Label Studio's host.
    """

    def __init__(self, policy: FetchPolicy, auth_headers: Callable[[], dict[str, str]] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self.auth_headers = auth_headers
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.resolver = resolver or default_resolver
        self._ls = _origin(policy.label_studio_url) if policy.label_studio_url else None
        self._http: httpx.Client | None = None  # made on the first network fetch (its SSL context costs ~36 ms)

    @property
    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(follow_redirects=False, trust_env=False, timeout=httpx.Timeout(self.policy.timeout))
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public --------------------------------------------------------------------------------------
    def resolve_url(self, value: str) -> str:
        """The absolute URL behind a task value (a path is relative to Label Studio)."""
        value = value.strip()
        if value.startswith("/") and not value.startswith("//"):
            if not self.policy.label_studio_url:
                raise FetchError(f"{_short(value)!r} is a Label Studio path but LABEL_STUDIO_URL is unknown")
            return self.policy.label_studio_url.rstrip("/") + value
        return value

    def fetch(self, value: str) -> bytes:
        """The bytes behind a ``data:`` URL, a Label Studio path or an http(s) URL (see module docstring)."""
        if not isinstance(value, str) or not value.strip():
            raise FetchError("empty task value")
        value = value.strip()
        if value[:5].lower() == "data:":
            # base64 inflates by 4/3: refuse before decoding anything too large
            if len(value) * 3 // 4 > self.policy.max_bytes + 1024:
                raise FetchError(f"data: URL larger than the limit of {self.policy.max_bytes} bytes")
            data = decode_data_url(value)
            if len(data) > self.policy.max_bytes:
                raise FetchError(f"data: URL larger than the limit of {self.policy.max_bytes} bytes")
            return data
        url = self.resolve_url(value)
        cached = self._cache_get(url)
        if cached is not None:
            return cached
        data = self._fetch_http(url)
        self._cache_put(url, data)
        return data

    def fetch_text(self, value: str) -> str:
        """A text behind a URL (``valueType="url"``), decoded as UTF-8 (invalid bytes replaced)."""
        return self.fetch(value).decode("utf-8", errors="replace")

    # --- http ----------------------------------------------------------------------------------------
    def is_label_studio(self, url: str) -> bool:
        try:
            return self._ls is not None and _origin(url) == self._ls
        except FetchError:
            return False

    def check_url(self, url: str) -> tuple[str, bool]:
        """Validate ``url`` against the policy; returns (the address to connect to, is Label Studio)."""
        scheme, host, port = _origin(url)
        is_ls = self._ls is not None and (scheme, host, port) == self._ls
        if is_ls:
            return host, True
        if not host_allowed(host, self.policy.allowed_hosts):
            raise FetchError(f"{_short(url)!r}: host {host!r} is neither Label Studio nor on MMAL_FETCH_ALLOWED_HOSTS")
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
            addrs = [str(literal)]
        except ValueError:
            addrs = list(self.resolver(host, port))
        if not addrs:
            raise FetchError(f"{_short(url)!r}: host {host!r} resolves to no address")
        bad = [a for a in addrs if not is_public_address(a)]
        if bad:
            raise FetchError(f"{_short(url)!r}: host {host!r} resolves to a non-public address {bad[0]} "
                             "(loopback, private, link-local or reserved); refused")
        return addrs[0], False

    def _fetch_http(self, url: str) -> bytes:
        deadline = time.monotonic() + self.policy.timeout
        current = url
        for _hop in range(self.policy.max_redirects + 1):
            addr, is_ls = self.check_url(current)
            parts = urllib.parse.urlsplit(current)
            headers = {"Accept": "*/*", "User-Agent": "mmal-ml-backend"}
            extensions: dict[str, str] = {}
            if is_ls:
                # Label Studio is configuration, not task data: connect by name (its token goes only here)
                target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
                if self.auth_headers is not None:
                    headers.update(self.auth_headers())
            else:
                # connect to the very address that was checked: no second lookup, no DNS rebinding
                ip_host = f"[{addr}]" if ":" in addr else addr
                netloc = f"{ip_host}:{parts.port}" if parts.port else ip_host
                target = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
                headers["Host"] = parts.netloc
                if parts.scheme == "https":
                    extensions["sni_hostname"] = parts.hostname or ""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"{_short(url)!r}: timed out after {self.policy.timeout} s")
            try:
                request = self._client.build_request("GET", target, headers=headers, extensions=extensions,
                                                     timeout=httpx.Timeout(remaining))
                response = self._client.send(request, stream=True)
            except httpx.TimeoutException:
                raise FetchError(f"{_short(url)!r}: timed out after {self.policy.timeout} s") from None
            except httpx.HTTPError as exc:
                raise FetchError(f"{_short(url)!r}: {type(exc).__name__}: {exc}") from None
            try:
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"{_short(current)!r}: redirect without a Location header")
                    current = urllib.parse.urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise FetchError(f"{_short(current)!r}: HTTP {response.status_code}")
                return self._read_limited(response, url, deadline)
            finally:
                response.close()
        raise FetchError(f"{_short(url)!r}: more than {self.policy.max_redirects} redirects")

    def _read_limited(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        limit = self.policy.max_bytes
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise FetchError(f"{_short(url)!r}: {length} bytes exceeds the limit of {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        try:
            # no chunk_size: httpx would buffer up to it, so a body trickling a byte at a time would never
            # reach the deadline check below (and no read timeout fires while bytes keep coming)
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > limit:
                    raise FetchError(f"{_short(url)!r}: body exceeds the limit of {limit} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"{_short(url)!r}: timed out after {self.policy.timeout} s")
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise FetchError(f"{_short(url)!r}: timed out after {self.policy.timeout} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{_short(url)!r}: {type(exc).__name__}: {exc}") from None
        return b"".join(chunks)

    # --- cache ---------------------------------------------------------------------------------------
    def _cache_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.blake2b(url.encode("utf-8"), digest_size=20).hexdigest()
        return self.cache_dir / key[:2] / key

    def _cache_get(self, url: str) -> bytes | None:
        path = self._cache_path(url)
        if path is None or not path.is_file():
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    def _cache_put(self, url: str, data: bytes) -> None:
        path = self._cache_path(url)
        if path is None:
            return
        try:
            write_atomic(path, data, fsync=False, mode=0o600)  # a cache: an entry lost in a crash is refetched
        except OSError as exc:  # a cache that cannot write only costs a refetch
            log.warning("fetch cache write failed for %s: %s", _short(url), exc)
