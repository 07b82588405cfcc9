"""An upstream that breaks off its answer, through the BFF on a real socket (issue #10, item 4).

Before the status line is out, the browser gets 502 JSON (a body shorter than its Content-Length was a 500). Once a
streamed answer has started, the BFF cannot change its status: it closes the connection, so the browser sees the
body as incomplete (a clean end would pass a truncated body off as whole), and logs one line, no traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bff.app import create_app
from bff.settings import Settings
from tests.bff.doubles import Browser, Provider

pytestmark = pytest.mark.anyio

ANSWERS = {
    b"/short": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nonly ten b",
    b"/headers": b"HTTP/1.1 200 OK\r\nContent-Type: text/pl",
    b"/nothing": b"",
    b"/long": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 300000\r\n\r\n" + b"x" * 150_000,
    b"/chunked": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
}


@pytest.fixture
async def broken_upstream() -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1]
        writer.write(ANSWERS[path[path.index(b"/", 1) :] if path.count(b"/") > 1 else path])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # and never the rest

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def test_a_broken_off_upstream_answer_is_502_or_a_closed_connection(
    rig_env: tuple[Provider, str, dict[str, str]],
    server_factory: Any,
    broken_upstream: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, upstream_url, env = rig_env
    env = {**env, "BFF_ROUTES": json.dumps({"notes": upstream_url, "broken": broken_upstream})}
    bff = server_factory(create_app(Settings.from_env(env)))
    async with httpx.AsyncClient(base_url=bff.url, timeout=10) as client, httpx.AsyncClient() as idp:
        browser = Browser(client)
        assert (await browser.login(idp)).status_code == 302
        caplog.set_level(logging.WARNING)
        for path in ("/short", "/headers", "/nothing"):
            response = await browser.request("GET", "/api/broken" + path)
            assert response.status_code == 502, (path, response.text)
            assert response.json()["error"] == "bad_gateway"
        for path in ("/long", "/chunked"):
            with pytest.raises(httpx.RemoteProtocolError):  # the BFF closed the connection mid-body
                await browser.request("GET", "/api/broken" + path)
        assert (await browser.request("GET", "/api/notes/me")).status_code == 200  # and serves on
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert any("broke off a streamed answer" in r.getMessage() for r in caplog.records)
