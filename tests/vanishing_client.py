"""A client that drops its connection mid-body, as raw ASGI (found attacking the stack: every POST endpoint of every
service logged two stack traces and counted a 500 per dropped request)."""

from __future__ import annotations

import logging
from typing import Any

import pytest


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An ASGI HTTP scope for ``method path`` with ``headers``, from a loopback client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 4711),
        "server": ("127.0.0.1", 80),
    }


async def post_and_vanish(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """POST ``path`` announcing 1000 bytes, send three, then disconnect; returns the status the app answered.
    Before the fix the app re-raised Starlette's ClientDisconnect (and this raises with it)."""
    incoming = [{"type": "http.request", "body": b"abc", "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope("POST", path, [(b"host", b"localhost"), (b"content-length", b"1000"), *headers])
    await app(scope, receive, send)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No ERROR line and no stack trace was logged."""
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]
