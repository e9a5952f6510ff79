"""Safe fetching of task data against real local HTTP servers (threads), no mocks of the network stack."""

from __future__ import annotations

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ml_server.fetch import Fetcher, FetchError, FetchPolicy, host_allowed, is_public_address

TOKEN = "Token secret-token"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


class _Handler(BaseHTTPRequestHandler):
    hits: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        type(self).hits.append((self.server.server_port, self.path, self.headers.get("Authorization")))
        routes = self.server.routes  # type: ignore[attr-defined]
        for prefix, action in routes.items():
            if self.path.startswith(prefix):
                return action(self)
        self.send_response(404)
        self.end_headers()


def _send(h, status=200, body=b"", headers=None):
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    if body is not None and "Transfer-Encoding" not in (headers or {}):
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if body:
        try:
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (size/time limit tests)
            pass


def _server(routes):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.routes = routes  # type: ignore[attr-defined]
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture(scope="module")
def servers():
    _Handler.hits = []
    other = _server({"/x.png": lambda h: _send(h, body=PNG)})
    other_url = f"http://127.0.0.1:{other.server_port}"

    def upload(h):
        if h.headers.get("Authorization") != TOKEN:
            return _send(h, 401, b"no")
        _send(h, body=PNG, headers={"Content-Type": "image/png"})

    def chunked_big(h):
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        chunk = b"x" * 4096
        try:
            for _ in range(64):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def slow(h):
        time.sleep(2)
        _send(h, body=b"late")

    ls = _server({
        "/data/upload/1/": upload,
        "/redirect-internal": lambda h: _send(h, 302, b"", {"Location": other_url + "/x.png"}),
        "/redirect-file": lambda h: _send(h, 302, b"", {"Location": "file:///etc/passwd"}),
        "/redirect-local": lambda h: _send(h, 302, b"", {"Location": "/data/upload/1/a.png"}),
        "/loop": lambda h: _send(h, 302, b"", {"Location": "/loop"}),
        "/big-declared": lambda h: _send(h, body=b"y" * 5000),
        "/big-chunked": chunked_big,
        "/slow": slow,
        "/text.txt": lambda h: _send(h, body="caf\u00e9 \U0001F600".encode()),
    })
    ls_url = f"http://127.0.0.1:{ls.server_port}"
    yield ls_url, other_url
    ls.shutdown()
    other.shutdown()


def _fetcher(ls_url, **kw):
    policy = FetchPolicy(label_studio_url=ls_url, **{"max_bytes": 20_000, "timeout": 1.5, **kw})
    return Fetcher(policy, auth_headers=lambda: {"Authorization": TOKEN})


def test_data_url_and_its_limit():
    f = Fetcher(FetchPolicy(max_bytes=100))
    assert f.fetch("data:image/png;base64," + base64.b64encode(PNG).decode()) == PNG
    assert f.fetch("data:text/plain,hello%20world") == b"hello world"
    with pytest.raises(FetchError, match="larger than the limit"):
        f.fetch("data:application/octet-stream;base64," + base64.b64encode(b"z" * 400).decode())
    with pytest.raises(Exception, match="base64"):
        f.fetch("data:image/png;base64,@@@not-base64@@@")


def test_label_studio_path_gets_the_token(servers):
    ls_url, _ = servers
    _Handler.hits.clear()
    with _fetcher(ls_url) as f:
        assert f.fetch("/data/upload/1/abc.png") == PNG
        assert f.fetch(ls_url + "/data/upload/1/abc.png") == PNG
        assert f.fetch_text("/text.txt") == "caf\u00e9 \U0001F600"
    assert all(auth == TOKEN for _, path, auth in _Handler.hits if path.startswith("/data/upload"))
    with Fetcher(FetchPolicy(label_studio_url=ls_url, timeout=1.5)) as anonymous:
        with pytest.raises(FetchError, match="HTTP 401"):
            anonymous.fetch("/data/upload/1/abc.png")
    with Fetcher(FetchPolicy()) as no_ls:
        with pytest.raises(FetchError, match="LABEL_STUDIO_URL is unknown"):
            no_ls.fetch("/data/upload/1/abc.png")


@pytest.mark.parametrize("url, message", [
    ("file:///etc/passwd", "only http and https"),
    ("FILE:///etc/passwd", "only http and https"),
    ("ftp://example.com/x.png", "only http and https"),
    ("gopher://127.0.0.1:6379/_INFO", "only http and https"),
    ("s3://bucket/key.png", "only http and https"),
    ("//evil.example/x.png", "only http and https"),
    ("http://user:pass@example.com/x.png", "credentials"),
    ("http:///x.png", "no host"),
])
def test_refused_schemes_and_shapes(url, message):
    with Fetcher(FetchPolicy(allowed_hosts=["*"])) as f:
        with pytest.raises(FetchError, match=message):
            f.fetch(url)


def test_hosts_off_the_allowlist_are_refused_before_any_lookup():
    def resolver(host, port):
        raise AssertionError("must not resolve a host that is not allowed")

    with Fetcher(FetchPolicy(allowed_hosts=["images.example.com", "*.cdn.example.org"]), resolver=resolver) as f:
        for url in ("http://evil.example.com/x.png", "https://example.org/x.png", "http://10.0.0.1/x.png",
                    "http://127.0.0.1:6379/", "http://[::1]/x"):
            with pytest.raises(FetchError, match="neither Label Studio nor on MMAL_FETCH_ALLOWED_HOSTS"):
                f.fetch(url)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.5", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fd00::1", "fe80::1",
                                     "::ffff:127.0.0.1", "::ffff:10.0.0.1"])
def test_allowed_hosts_resolving_to_internal_addresses_are_refused(address):
    with Fetcher(FetchPolicy(allowed_hosts=["*"]), resolver=lambda h, p: ["93.184.216.34", address]) as f:
        with pytest.raises(FetchError, match="non-public address"):
            f.fetch("https://images.example.com/x.png")
    with Fetcher(FetchPolicy(allowed_hosts=["*"])) as f:
        with pytest.raises(FetchError, match="non-public address"):
            f.fetch(f"http://[{address}]/x" if ":" in address else f"http://{address}/x")


def test_other_loopback_servers_are_refused_even_directly(servers):
    ls_url, other_url = servers
    with _fetcher(ls_url, allowed_hosts=["127.0.0.1"]) as f:
        with pytest.raises(FetchError, match="non-public address"):
            f.fetch(other_url + "/x.png")


def test_redirects_are_checked_hop_by_hop(servers):
    ls_url, other_url = servers
    with _fetcher(ls_url) as f:
        assert f.fetch("/redirect-local") == PNG  # a redirect within Label Studio is fine
        with pytest.raises(FetchError, match="neither Label Studio"):
            f.fetch("/redirect-internal")
        with pytest.raises(FetchError, match="only http and https"):
            f.fetch("/redirect-file")
        with pytest.raises(FetchError, match="more than 3 redirects"):
            f.fetch("/loop")
    assert not any(port == int(other_url.rsplit(":", 1)[1]) for port, _, _ in _Handler.hits)


def test_size_limits_declared_and_streamed(servers):
    ls_url, _ = servers
    with _fetcher(ls_url, max_bytes=4000) as f:
        with pytest.raises(FetchError, match="exceeds the limit"):
            f.fetch("/big-declared")
        with pytest.raises(FetchError, match="exceeds the limit of 4000 bytes"):
            f.fetch("/big-chunked")


def test_time_limit(servers):
    ls_url, _ = servers
    with _fetcher(ls_url, timeout=0.5) as f:
        t0 = time.monotonic()
        with pytest.raises(FetchError, match="timed out"):
            f.fetch("/slow")
        assert time.monotonic() - t0 < 2.5


def test_missing_resource_and_cache(servers, tmp_path):
    ls_url, _ = servers
    with _fetcher(ls_url) as f:
        with pytest.raises(FetchError, match="HTTP 404"):
            f.fetch("/nothing-here")
    cached = Fetcher(FetchPolicy(label_studio_url=ls_url, timeout=1.5), auth_headers=lambda: {"Authorization": TOKEN},
                     cache_dir=tmp_path)
    before = len(_Handler.hits)
    assert cached.fetch("/data/upload/1/cached.png") == PNG
    assert cached.fetch("/data/upload/1/cached.png") == PNG
    assert len(_Handler.hits) == before + 1
    cached.close()


def test_public_address_and_allowlist_rules():
    assert is_public_address("93.184.216.34") and is_public_address("2606:2800:220:1:248:1893:25c8:1946")
    assert not is_public_address("127.0.0.1") and not is_public_address("::ffff:192.168.0.1")
    assert host_allowed("a.cdn.example.org", ["*.example.org"]) and host_allowed("example.org", ["*.example.org"])
    assert not host_allowed("badexample.org", ["*.example.org"])
    assert host_allowed("Images.Example.COM.", ["images.example.com"]) and host_allowed("x.y", ["*"])
    assert not host_allowed("x.y", [])


def test_data_urls_need_no_http_client():
    """A batch of data: URLs (the usual /predict) never builds the HTTP client and its SSL context."""
    f = Fetcher(FetchPolicy())
    assert f.fetch("data:text/plain;base64,aGVsbG8=") == b"hello"
    assert f._http is None
    f.close()
