"""Untrusted URLs in task data: refused or cut at the limit, with a clear error, and never connected to.

tests/test_fetch.py covers the fetcher's rules one by one (schemes, allowlist, non-public addresses, redirects
hop by hop, declared and chunked size limits, a slow first byte). This file adds what it leaves open:
bodies that never end (fast or trickling), redirects to metadata and link-local addresses, loopback spelled
in other ways, and the whole path through ``/predict`` with a real trained model, where a *sentinel* service
on a loopback port proves that no refused URL was ever connected to. All servers are real sockets on loopback.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from fastapi.testclient import TestClient

from ml_server.app import create_app
from ml_server.demo import emoji_tasks
from ml_server.fetch import Fetcher, FetchError, FetchPolicy
from tests.test_ml_server_protocol import labelled_emoji_project, make_settings, train_version

REDIS_URL = "redis://127.0.0.1:6379/13"
PNG_URL = emoji_tasks(1, seed=0).tasks[0]["data"]["image"]


class Sentinel:
    """A loopback TCP service (think Redis, a database, an admin port) that counts every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


class _LS(BaseHTTPRequestHandler):
    """Label Studio's host as the fetcher sees it: serves uploads, and misbehaves on purpose."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        routes = self.server.routes  # type: ignore[attr-defined]
        for prefix, action in routes.items():
            if self.path.startswith(prefix):
                return action(self)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _redirect(location: str):
    def handler(h):
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return handler


def _endless_fast(h):
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"\x89PNG" * 4096
    try:
        while True:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass


def _endless_trickle(h):
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")  # no length to refuse up front; a byte at a time, forever
    h.end_headers()
    try:
        while True:
            h.wfile.write(b"1\r\nx\r\n")
            h.wfile.flush()
            time.sleep(0.05)
    except OSError:
        pass


def _stall_after_headers(h):
    h.send_response(200)
    h.send_header("Content-Length", "100")
    h.end_headers()
    h.wfile.flush()
    time.sleep(5)


@pytest.fixture(scope="module")
def sentinel():
    s = Sentinel()
    yield s
    s.close()


@pytest.fixture(scope="module")
def label_studio(sentinel):
    target = f"http://127.0.0.1:{sentinel.port}"
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _LS)
    srv.daemon_threads = True
    srv.routes = {  # type: ignore[attr-defined]
        "/redirect-sentinel": _redirect(target + "/admin"),
        "/v6-redirect-sentinel": _redirect(f"http://[::1]:{sentinel.port}/admin"),
        "/redirect-metadata": _redirect("http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
        "/redirect-link-local-v6": _redirect("http://[fe80::1%25eth0]/x.png"),
        "/redirect-file": _redirect("file:///etc/shadow"),
        "/redirect-decimal-loopback": _redirect(f"http://2130706433:{sentinel.port}/"),
        "/endless-fast": _endless_fast,
        "/endless-trickle": _endless_trickle,
        "/stall": _stall_after_headers,
    }
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def _fetcher(ls_url: str, **kw) -> Fetcher:
    policy = dict(label_studio_url=ls_url, allowed_hosts=["*"], max_bytes=50_000, timeout=1.5)
    policy.update(kw)
    return Fetcher(FetchPolicy(**policy), auth_headers=lambda: {"Authorization": "Token secret"})


@pytest.mark.parametrize("path, message", [
    ("/redirect-sentinel", "non-public address 127.0.0.1"),
    ("/v6-redirect-sentinel", "non-public address ::1"),
    ("/redirect-metadata", "non-public address 169.254.169.254"),
    ("/redirect-link-local-v6", "non-public address fe80::1"),
    ("/redirect-file", "only http and https URLs can be fetched, not file scheme"),
    ("/redirect-decimal-loopback", "non-public address 127.0.0.1"),
])
def test_redirects_to_internal_targets_are_refused_even_with_every_host_allowed(label_studio, sentinel, path,
                                                                                  message):
    before = sentinel.connections
    with _fetcher(label_studio) as f:
        with pytest.raises(FetchError, match=message):
            f.fetch(path)
    assert sentinel.connections == before


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f000001", "127.1", "0177.0.0.1", "localhost",
                                  "[::1]", "[::ffff:127.0.0.1]", "169.254.169.254", "[fe80::1%25eth0]", "0.0.0.0"])
def test_loopback_and_link_local_in_any_spelling_are_refused(label_studio, sentinel, host):
    before = sentinel.connections
    with _fetcher(label_studio) as f:
        with pytest.raises(FetchError, match="non-public address"):
            f.fetch(f"http://{host}:{sentinel.port}/")
    assert sentinel.connections == before


def test_label_studio_host_on_another_port_is_not_label_studio(label_studio, sentinel):
    """Only Label Studio's exact origin may be internal; its host with another port is any other host."""
    with _fetcher(label_studio, allowed_hosts=[]) as f:
        with pytest.raises(FetchError, match="neither Label Studio nor on MMAL_FETCH_ALLOWED_HOSTS"):
            f.fetch(f"http://127.0.0.1:{sentinel.port}/")
    with _fetcher(label_studio, allowed_hosts=["127.0.0.1"]) as f:
        with pytest.raises(FetchError, match="non-public address"):
            f.fetch(f"http://127.0.0.1:{sentinel.port}/")
    assert sentinel.connections == 0


@pytest.mark.parametrize("path, message, within", [
    ("/endless-fast", "body exceeds the limit of 50000 bytes", 1.5),
    ("/endless-trickle", "timed out after 1.5 s", 3.0),
    ("/stall", "timed out after 1.5 s", 3.0),
])
def test_endless_and_stalled_bodies_are_cut_at_the_limit(label_studio, path, message, within):
    with _fetcher(label_studio) as f:
        t0 = time.monotonic()
        with pytest.raises(FetchError, match=message):
            f.fetch(path)
        assert time.monotonic() - t0 < within


def test_predict_with_hostile_task_urls_answers_every_task_and_connects_to_none(tmp_path, label_studio, sentinel,
                                                                                 caplog):
    """Through the server: each hostile image URL is refused (or cut), that task answered with an error naming
    the field and the reason (and logged), the good task predicted, the whole batch answered within the
    fetch limits, and the sentinel service on a loopback port sees no connection."""
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    try:
        s = make_settings(tmp_path, redis_url=REDIS_URL, label_studio_url=label_studio, label_studio_api_key="tok",
                          fetch_allowed_hosts=["*"], fetch_timeout=1.5, fetch_max_bytes=50_000)
        config, tasks, _ = labelled_emoji_project()
        train_version(s, 1, config, [dict(t, project=1) for t in tasks])
        hostile = {
            "file:///etc/passwd": "only http and https URLs can be fetched, not file scheme",
            "http://169.254.169.254/latest/meta-data/": "non-public address 169.254.169.254",
            f"http://127.0.0.1:{sentinel.port}/": "non-public address 127.0.0.1",
            f"http://[::1]:{sentinel.port}/": "non-public address ::1",
            f"http://2130706433:{sentinel.port}/": "non-public address 127.0.0.1",
            "gopher://127.0.0.1:6379/_FLUSHALL": "only http and https URLs can be fetched, not gopher scheme",
            "/redirect-sentinel": "non-public address 127.0.0.1",
            "/redirect-metadata": "non-public address 169.254.169.254",
            "/endless-fast": "body exceeds the limit of 50000 bytes",
            "/endless-trickle": "timed out after 1.5 s",
        }
        fresh = emoji_tasks(4, seed=21).tasks
        batch = [{"id": 7000 + i, "data": {"image": url, "text": fresh[i]["data"]["text"]}}
                 for i, url in enumerate(hostile)]
        batch.append({"id": 7999, "data": {"image": PNG_URL, "text": fresh[-1]["data"]["text"]}})  # a good one
        with TestClient(create_app(s)) as client, caplog.at_level(logging.WARNING, logger="ml_server.dataset"):
            t0 = time.monotonic()
            r = client.post("/predict", json={"tasks": batch, "project": "1.1700000000", "label_config": config})
            elapsed = time.monotonic() - t0
        assert r.status_code == 200
        results = r.json()["results"]
        assert len(results) == len(batch) and results[-1]["result"] and "error" not in results[-1]
        logged = "\n".join(rec.getMessage() for rec in caplog.records)
        for i, (url, reason) in enumerate(hostile.items()):
            line = next((m for m in logged.splitlines() if m.startswith(f"task {7000 + i}, image:")), "")
            assert reason in line, (url, line)
            assert "result" not in results[i] and results[i]["error"].startswith(f"task {7000 + i}: data.image: ")
            assert reason in results[i]["error"], (url, results[i])
        assert "task 7999" not in logged
        assert sentinel.connections == 0
        assert elapsed < 20  # each fetch is bounded (1.5 s deadline), nothing hangs
    finally:
        conn.flushdb()
