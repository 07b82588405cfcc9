"""A WebSocket through deploy/caddy's Caddyfile (real Caddy, the BFF as a process): the handshake's auth request
reaches /bff/auth as a plain GET that still says it is an upgrade (Upgrade: websocket), so the BFF judges it by
its Origin (issue #18 item 7), and the socket is relayed by Caddy with the BFF's token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.e2e.test_edge import chat_upstream
from tests.e2e.test_edge_caddy import caddy

pytestmark = pytest.mark.anyio

KEY = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}


async def test_a_websocket_through_caddy(stack_factory: Any, process_factory: Any, tmp_path: Path) -> None:
    stack = stack_factory(bff_thread=False, BFF_TRUSTED_PROXIES="127.0.0.1/32")
    seen: list[dict[str, str]] = []
    runner, chat_port = await chat_upstream(seen)
    stack.bff_env["BFF_ROUTES"] = json.dumps(
        {"notes": stack.rs_url, "live": {"url": f"http://127.0.0.1:{chat_port}", "websocket": True}}
    )
    edge_port = int(stack.bff_url.rsplit(":", 1)[1])
    bff = process_factory(["-m", "bff", "serve"], stack.bff_env, health_path="/readyz")
    env = {
        "BFF_ADDR": f"127.0.0.1:{bff.port}",
        "NOTES_ADDR": stack.rs_url.removeprefix("http://"),
        "LIVE_ADDR": f"127.0.0.1:{chat_port}",
    }
    try:
        with caddy(edge_port, env, tmp_path):
            url = f"http://127.0.0.1:{edge_port}"
            browser = stack.browser(url)
            assert (await stack.login(browser, "alice")).status_code == 302
            cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
            async with aiohttp.ClientSession() as session:
                ws_url = url.replace("http://", "ws://") + "/api/live/ws"
                async with session.ws_connect(ws_url, headers={"Cookie": cookie, "Origin": stack.bff_url}) as ws:
                    await ws.send_str("through caddy")
                    assert (await ws.receive(timeout=5)).data == "echo: through caddy"
                assert seen[-1]["Authorization"].startswith("Bearer ") and "Cookie" not in seen[-1]
                with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
                    await session.ws_connect(ws_url, headers={"Cookie": cookie, "Origin": "https://evil.example"})
                assert foreign.value.status == 403
            # a GET that carries the key but is no upgrade: an ordinary call, which needs X-CSRF
            async with httpx.AsyncClient(timeout=10) as client:
                plain = await client.get(
                    url + "/api/live/ws", headers={"Cookie": cookie, "Origin": stack.bff_url, **KEY}
                )
            assert plain.status_code == 403 and plain.json()["error"] == "csrf"
    finally:
        await runner.cleanup()
