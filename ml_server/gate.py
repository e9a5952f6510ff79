"""The one check in front of every route: basic auth, JSON bodies, a size limit (pure ASGI middleware)."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any, Callable

from ml_server.settings import Settings


def basic_auth_ok(header: bytes | None, settings: Settings) -> bool:
    """Whether an ``Authorization`` header carries the configured Basic credentials (constant-time compare)."""
    if not header or not header[:6].lower() == b"basic ":
        return False
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return False
    return bool(sep) and secrets.compare_digest(user, str(settings.basic_auth_user).encode()) \
        and secrets.compare_digest(password, str(settings.basic_auth_pass).encode())


def _is_json(content_type: bytes | None) -> bool:
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class RequestGate:
    """Pure ASGI middleware in front of every route, so nothing reaches a handler unchecked:

    - basic auth (when set) on every path but ``/health``, unknown paths and the OpenAPI docs included,
      answered 401 before the body is read (the only place credentials are checked; the routes'
      ``HTTPBasic`` dependency only documents the scheme in the OpenAPI schema);
    - a request body must be JSON (``Content-Type: application/json``), else 415 naming the type sent;
    - a request body larger than ``MMAL_MAX_REQUEST_BYTES`` is refused with 413, by its Content-Length
      before reading anything, or while reading a chunked body (at most the limit is ever buffered).
    """

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.settings.auth_enabled and scope.get("path") != "/health" \
                and not basic_auth_ok(headers.get(b"authorization"), self.settings):
            await _reply(send, 401, "authentication required", {"www-authenticate": 'Basic realm="mmal"'})
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_request_bytes
        length = headers.get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        has_body = (declared or 0) > 0 or b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if has_body and not _is_json(headers.get(b"content-type")):
            sent = headers.get(b"content-type", b"").decode("latin-1")[:100] or "none"
            await _reply(send, 415, f"request body must be JSON (Content-Type: application/json), got {sent!r}")
            return
        if declared is not None and declared > limit:
            await _reply(send, 413, f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                                    "(MMAL_MAX_REQUEST_BYTES)")
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await _reply(send, 413, f"request body exceeds the limit of {limit} bytes (MMAL_MAX_REQUEST_BYTES)")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Callable, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps({"detail": detail}).encode()
    # close the connection: a refused body may still be arriving (endless, or 1 GB), and uvicorn would
    # otherwise read and discard it for as long as the client sends
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
           (b"connection", b"close")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
