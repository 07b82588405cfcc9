"""BFF_FRONTEND as a dev server's URL (DESIGN §11): `bff serve` as a process proxies a dev-server stand-in (its
pages, and its hot-reload WebSocket the way Vite's runs: subprotocol ``vite-hmr``, a token in the query, the server
pushing ``full-reload``) on real sockets — without the browser's cookies or credentials, and without the dev server's
cookies coming back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.conftest import free_port
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio

NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html,*/*;q=0.8"}
CREDENTIALS = {"Authorization": "Bearer browser-token", "X-CSRF": "1", "DPoP": "proof", "Proxy-Authorization": "x"}


class DevServer:
    """A dev-server stand-in: pages that echo what reached them (and try to set a cookie), an HMR WebSocket."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.sockets: list[WebSocket] = []
        self.socket_headers: list[dict[str, str]] = []

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/__reload", self.reload, methods=["POST"]),
                Route("/{path:path}", self.page, methods=["GET", "HEAD", "POST"]),
                WebSocketRoute("/", self.hmr),
            ]
        )

    async def page(self, request: Request) -> Response:
        self.seen.append(dict(request.headers))
        if request.url.path == "/@vite/client":
            return Response("export const hmr = true;", media_type="text/javascript")
        if request.url.path == "/moved":  # a redirect to its own absolute URL, as a dev server may answer
            return Response(status_code=302, headers={"Location": str(request.base_url) + "src/?x=1"})
        body = await request.body()
        return JSONResponse(
            {"path": request.url.path, "query": request.url.query, "body": body.decode()},
            headers={
                "Set-Cookie": "__Host-session=from-dev-server; Path=/; Secure",
                "Clear-Site-Data": '"cookies"',
                "Access-Control-Allow-Origin": request.headers.get("origin", "*"),  # as permissive as dev servers are
                "Access-Control-Allow-Credentials": "true",
            },
        )

    async def hmr(self, websocket: WebSocket) -> None:
        self.socket_headers.append(dict(websocket.headers))
        if websocket.query_params.get("token") != "vite-token" or "vite-hmr" not in websocket.scope["subprotocols"]:
            await websocket.close(1008)
            return
        await websocket.accept(subprotocol="vite-hmr")
        await websocket.send_text(json.dumps({"type": "connected"}))
        self.sockets.append(websocket)
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text(json.dumps({"type": "custom", "echo": text}))
        except WebSocketDisconnect:
            self.sockets.remove(websocket)

    async def reload(self, request: Request) -> Response:
        for websocket in self.sockets:
            await websocket.send_text(json.dumps({"type": "full-reload", "path": "*"}))
        return Response(status_code=204)


@pytest.fixture
def dev_stack(stack_factory: Any, server_factory: Any, process_factory: Any) -> tuple[Stack, DevServer, Any, Any]:
    dev = DevServer()
    dev_server = server_factory(dev.app(), ws="websockets-sansio")
    stack: Stack = stack_factory(bff_thread=False)
    env = {**stack.bff_env, "BFF_FRONTEND": dev_server.url + "/", "BFF_COOKIE_SECURE": "true"}
    bff = process_factory(["-m", "bff", "serve"], env, port=int(stack.bff_url.rsplit(":", 1)[1]))
    return stack, dev, dev_server, bff


async def test_dev_server_proxied_without_credentials(dev_stack: tuple[Stack, DevServer, Any, Any]) -> None:
    stack, dev, dev_server, bff = dev_stack
    assert f"frontend: proxying {dev_server.url}" in bff.output()  # said plainly at start-up
    browser = stack.browser()
    await stack.login(browser)
    assert browser.cookies  # a live session, whose cookie the browser sends with everything below
    page = await browser.request("GET", "/src/App.vue?t=1", csrf=False, headers={**NAVIGATE, **CREDENTIALS})
    assert page.status_code == 200 and page.json() == {"path": "/src/App.vue", "query": "t=1", "body": ""}
    client = await browser.request("GET", "/@vite/client", csrf=False)
    assert client.headers["content-type"].startswith("text/javascript") and "hmr" in client.text
    posted = await browser.request("POST", "/api-mock/save", content=b"payload", headers={"Origin": stack.bff_url})
    assert posted.json()["body"] == "payload"
    for headers in dev.seen:
        for name in ("cookie", "authorization", "x-csrf", "dpop", "proxy-authorization"):
            assert name not in headers, (name, headers)
        assert headers["host"] == dev_server.url.removeprefix("http://")  # its own Host (Vite's allowedHosts)
    for answer in (page, client, posted):
        assert "set-cookie" not in answer.headers and "clear-site-data" not in answer.headers
        assert not any(name.startswith("access-control-") for name in answer.headers)  # no CORS grant for our origin
    moved = await browser.request("GET", "/moved", csrf=False)
    assert moved.status_code == 302 and moved.headers["location"] == "/src/?x=1"  # stays on the BFF
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200  # the session survived all that
    # /bff/* is never the dev server's
    assert (await browser.request("GET", "/bff/nope", csrf=False)).status_code == 404
    assert all("/bff/nope" not in json.dumps(h) for h in dev.seen)


async def test_hot_reload_websocket_through_the_bff(dev_stack: tuple[Stack, DevServer, Any, Any]) -> None:
    stack, dev, dev_server, _ = dev_stack
    browser = stack.browser()
    await stack.login(browser)
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    ws_url = stack.bff_url.replace("http", "ws", 1) + "/?token=vite-token"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            ws_url, protocols=["vite-hmr"], headers={"Origin": stack.bff_url, "Cookie": cookie, **CREDENTIALS}
        ) as ws:
            assert ws.protocol == "vite-hmr"
            assert json.loads((await ws.receive(timeout=5)).data) == {"type": "connected"}
            async with httpx.AsyncClient() as plain:  # the dev server rebuilt something: it pushes, we see it
                assert (await plain.post(dev_server.url + "/__reload")).status_code == 204
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "full-reload"
            await ws.send_str("ping")
            assert json.loads((await ws.receive(timeout=5)).data) == {"type": "custom", "echo": "ping"}
        (headers,) = dev.socket_headers
        for name in ("cookie", "authorization", "x-csrf", "dpop", "origin"):
            assert name not in headers, (name, headers)

        # A foreign page must not read the dev server's messages through the BFF (cross-site WebSocket hijacking)
        for origin in ({"Origin": "http://evil.test"}, {}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url, protocols=["vite-hmr"], headers=origin)
            assert refused.value.status == 403
        assert len(dev.socket_headers) == 1  # refused before the dev server was asked
        # /api/ and /bff/ WebSockets are never the dev server's
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(stack.bff_url + "/bff/x", headers={"Origin": stack.bff_url})
        assert len(dev.socket_headers) == 1


async def test_dev_server_down_is_a_502_page(stack_factory: Any, process_factory: Any) -> None:
    stack: Stack = stack_factory(bff_thread=False)
    env = {**stack.bff_env, "BFF_FRONTEND": f"http://127.0.0.1:{free_port()}"}
    bff = process_factory(["-m", "bff", "serve"], env, port=int(stack.bff_url.rsplit(":", 1)[1]))
    async with httpx.AsyncClient(base_url=stack.bff_url) as client:
        page = await client.get("/", headers=NAVIGATE)
        assert page.status_code == 502 and page.headers["content-type"].startswith("text/html")
        assert "The frontend server (BFF_FRONTEND) is unreachable." in page.text
        call = await client.get("/", headers={"Sec-Fetch-Mode": "cors"})
        assert call.status_code == 502 and call.json()["error"] == "bad_gateway"
        metrics = (await client.get("/metrics")).text
        assert 'bff_upstream_errors_total{kind="bad_gateway",route="frontend"} 2.0' in metrics
    await asyncio.sleep(0)
    assert "BFF_FRONTEND http://127.0.0.1" in bff.output() and "unreachable" in bff.output()  # the log line


async def test_login_required_guards_the_dev_server_too(
    stack_factory: Any, server_factory: Any, process_factory: Any
) -> None:
    dev = DevServer()
    dev_server = server_factory(dev.app(), ws="websockets-sansio")
    stack: Stack = stack_factory(bff_thread=False)
    env = {**stack.bff_env, "BFF_FRONTEND": dev_server.url, "BFF_LOGIN_REQUIRED": "true"}
    process_factory(["-m", "bff", "serve"], env, port=int(stack.bff_url.rsplit(":", 1)[1]))
    browser = stack.browser()
    went = await browser.request("GET", "/src/App.vue", csrf=False, headers=NAVIGATE)
    assert went.status_code == 302 and went.headers["location"] == "/bff/login?return_to=%2Fsrc%2FApp.vue"
    called = await browser.request("GET", "/src/App.vue", csrf=False, headers={"Sec-Fetch-Mode": "cors"})
    assert called.status_code == 401 and called.json()["error"] == "login_required"
    ws_url = stack.bff_url.replace("http", "ws", 1) + "/?token=vite-token"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url, protocols=["vite-hmr"], headers={"Origin": stack.bff_url})
        assert refused.value.status == 401
        assert dev.seen == [] and dev.socket_headers == []  # nothing reached the dev server without a session
        await stack.login(browser)
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        async with session.ws_connect(
            ws_url, protocols=["vite-hmr"], headers={"Origin": stack.bff_url, "Cookie": cookie}
        ) as ws:
            assert json.loads((await ws.receive(timeout=5)).data) == {"type": "connected"}
    page = await browser.request("GET", "/src/App.vue", csrf=False, headers=NAVIGATE)
    assert page.status_code == 200 and page.json()["path"] == "/src/App.vue"


async def test_dev_proxy_takes_malformed_input_without_a_500(dev_stack: tuple[Stack, DevServer, Any, Any]) -> None:
    """The fuzz run's troublemakers (tests/e2e/test_fuzz.py) as paths, queries and headers of the dev-server proxy."""
    from tests.e2e.test_fuzz import ATOMS, Fuzzer

    stack, dev, _, _ = dev_stack
    seen: set[int] = set()
    async with httpx.AsyncClient(timeout=15) as client:
        for atom in ATOMS:
            for method, headers in (("GET", NAVIGATE), ("POST", {"Origin": stack.bff_url}), ("OPTIONS", {})):
                url = Fuzzer.url_safe(f"{stack.bff_url}/{atom}/x?{atom}={atom}")
                raw = {**headers, "Accept": Fuzzer.url_safe(atom)[:200] or "*/*", "Sec-Fetch-Mode": "navigate"}
                try:
                    answer = await client.request(
                        method, url, headers=raw, content=atom.encode("utf-8", "surrogatepass")
                    )
                except httpx.ReadTimeout:
                    raise AssertionError((method, url[:200], raw)) from None
                except (httpx.LocalProtocolError, httpx.InvalidURL, httpx.RemoteProtocolError):
                    continue
                seen.add(answer.status_code)
                assert answer.status_code < 500 and "Traceback" not in answer.text, (
                    method,
                    url[:200],
                    answer.text[:200],
                )
    assert 200 in seen and 400 in seen, seen  # the dev server answered, and dot segments were refused before it
