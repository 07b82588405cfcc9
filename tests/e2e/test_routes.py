"""DESIGN §7 end to end, on real sockets: the real auth server (RFC 8707), two real resource servers with their own
audiences, an echo upstream that shows what it received, and the BFF (in a thread, or as processes)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import pytest

from tests.bff.doubles import Browser
from tests.conftest import free_port
from tests.e2e.conftest import CLIENT_SECRET, Stack, TokenGate, auth_env, wait_ready
from tests.e2e.echo import Echo

pytestmark = pytest.mark.anyio

ORDERS = "https://orders.example"
REPORTS = "https://reports.example"
WS = "websockets-sansio"  # uvicorn's default WebSocket implementation (what `bff serve` runs)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def bearer(headers: dict[str, str]) -> str:
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


@dataclass
class RouteStack:
    stack: Stack
    echo: Echo
    orders_rs: str
    reports_rs: str

    def browser(self, base_url: str | None = None) -> Browser:
        return self.stack.browser(base_url)

    async def login(self, browser: Browser) -> None:
        assert (await self.stack.login(browser)).status_code == 302


@pytest.fixture
def route_stack(redis_url: str, server_factory: Any) -> Callable[..., RouteStack]:
    from auth_server.app import create_app as create_auth
    from auth_server.settings import Settings as AuthSettings
    from bff.app import create_app as create_bff
    from bff.settings import Settings as BffSettings
    from resource_server.app import create_app as create_rs
    from resource_server.settings import Settings as RSSettings

    keys_dir = tempfile.mkdtemp(prefix="jwt-bff-routes-keys-")

    def make(*, access_ttl: int = 300, bff_thread: bool = True, **bff_extra: str) -> RouteStack:
        auth_port, bff_port = free_port(), free_port()
        auth_url, bff_url = f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{bff_port}"
        env = auth_env(auth_url, bff_url, redis_url, keys_dir, access_ttl)
        (client,) = json.loads(env["AUTH_CLIENTS"])
        client["grant_types"].append("client_credentials")
        client["audience"] = ["notes", ORDERS, REPORTS]
        env["AUTH_CLIENTS"] = json.dumps([client])
        auth_settings = AuthSettings.from_env(env)
        gate = TokenGate(create_auth(auth_settings))
        auth = server_factory(gate, auth_port)
        rs = {
            audience: server_factory(
                create_rs(RSSettings.from_env({"RS_ISSUER": auth_url, "RS_AUDIENCE": audience, "REDIS_URL": redis_url}))
            ).url
            for audience in (ORDERS, REPORTS)
        }
        for url in rs.values():
            wait_ready(url)
        echo = Echo()
        echo_url = server_factory(echo.app(), ws=WS).url
        routes = {
            "orders": {"url": rs[ORDERS], "resource": ORDERS},
            "reports": {"url": rs[REPORTS], "token": "client", "resource": REPORTS},
            "leaky": {"url": echo_url, "resource": ORDERS, "methods": ["GET", "POST"]},
            "maybe": {"url": echo_url, "token": "optional", "resource": ORDERS},
            "other": {"url": echo_url, "resource": REPORTS},
            "app": {"url": echo_url, "token": "client", "resource": REPORTS},
            "public": {"url": echo_url, "token": "none", "websocket": True},
            "chat": {"url": echo_url, "websocket": True, "resource": ORDERS},
            "stray": {"url": echo_url, "resource": "https://unknown.example"},
        }
        bff_env = {
            "BFF_ISSUER": auth_url,
            "BFF_CLIENT_ID": "bff",
            "BFF_CLIENT_SECRET": CLIENT_SECRET,
            "BFF_PUBLIC_URL": bff_url,
            "BFF_ROUTES": json.dumps(routes),
            "REDIS_URL": redis_url,
            **bff_extra,
        }
        if bff_thread:
            server_factory(create_bff(BffSettings.from_env(bff_env)), bff_port, ws=WS)
            wait_ready(bff_url)
        stack = Stack(redis_url, auth_url, "", bff_url, bff_env, gate, auth, lambda: auth)
        made.append(stack)
        return RouteStack(stack, echo, rs[ORDERS], rs[REPORTS])

    made: list[Stack] = []
    return make


async def close_clients(rs: RouteStack) -> None:
    for client in rs.stack.clients:
        await client.aclose()


async def test_each_token_type(route_stack: Callable[..., RouteStack]) -> None:
    rs = route_stack()
    anonymous, browser = rs.browser(), rs.browser()
    try:
        # without a session: user and client routes are 401; optional and none go out without a token
        for path in ("/api/orders/me", "/api/leaky/x", "/api/reports/me", "/api/app/x"):
            response = await anonymous.request("GET", path)
            assert response.status_code == 401 and response.json()["error"] == "login_required", path
        for path in ("/api/maybe/x", "/api/public/x"):
            assert (await anonymous.request("GET", path)).status_code == 200
        assert [("authorization" in r["headers"]) for r in rs.echo.requests] == [False, False]

        await rs.login(browser)
        sub = (await browser.request("GET", "/bff/user")).json()["sub"]

        # user: a token whose aud is exactly the route's resource, accepted by that resource's server
        me = await browser.request("GET", "/api/orders/me")
        assert me.status_code == 200, me.text
        assert me.json()["sub"] == sub and me.json()["aud"] == ORDERS
        leaky = await browser.request("GET", "/api/leaky/x")
        user_token = bearer(leaky.json()["headers"])
        claims = claims_of(user_token)
        assert claims["aud"] == ORDERS and claims["sub"] == sub and claims["sid"]

        # optional with a session: the user's token for its resource
        maybe = claims_of(bearer((await browser.request("GET", "/api/maybe/x")).json()["headers"]))
        assert maybe["aud"] == ORDERS and maybe["sub"] == sub

        # client: the BFF's own token for its resource, never the user (no sub of theirs, no sid)
        reports = await browser.request("GET", "/api/reports/me")
        assert reports.status_code == 200, reports.text
        assert reports.json()["sub"] == "bff" and reports.json()["aud"] == REPORTS
        app = claims_of(bearer((await browser.request("GET", "/api/app/x")).json()["headers"]))
        assert app["sub"] == "bff" and app["aud"] == REPORTS and "sid" not in app
        app_headers = rs.echo.seen("/x")[-1]["headers"]
        assert sub not in json.dumps(app_headers)

        # none: no token and no cookie, even with a session
        public = (await browser.request("GET", "/api/public/x")).json()["headers"]
        assert "authorization" not in public and "cookie" not in public
        for request in rs.echo.requests:
            assert "cookie" not in request["headers"]
    finally:
        await close_clients(rs)


async def test_a_route_token_is_refused_by_another_routes_server(route_stack: Callable[..., RouteStack]) -> None:
    rs = route_stack()
    browser = rs.browser()
    try:
        await rs.login(browser)
        leaked = bearer((await browser.request("GET", "/api/leaky/x")).json()["headers"])
        async with httpx.AsyncClient(timeout=10) as client:
            refused = await client.get(rs.reports_rs + "/me", headers={"Authorization": f"Bearer {leaked}"})
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
            # the same token is good where it was meant to go
            accepted = await client.get(rs.orders_rs + "/me", headers={"Authorization": f"Bearer {leaked}"})
            assert accepted.status_code == 200
        # the client token of one resource is no good for another either
        app = bearer((await browser.request("GET", "/api/app/x")).json()["headers"])
        async with httpx.AsyncClient(timeout=10) as client:
            refused = await client.get(rs.orders_rs + "/me", headers={"Authorization": f"Bearer {app}"})
            assert refused.status_code == 401
    finally:
        await close_clients(rs)


async def test_refused_method_is_405_without_calling_the_upstream(route_stack: Callable[..., RouteStack]) -> None:
    rs = route_stack()
    browser = rs.browser()
    try:
        await rs.login(browser)
        before = len(rs.echo.requests)
        for method in ("DELETE", "PUT", "PATCH"):
            response = await browser.request(method, "/api/leaky/x")
            assert response.status_code == 405, response.text
            assert response.headers["allow"] == "GET, HEAD, POST" and response.json()["error"] == "method_not_allowed"
        assert len(rs.echo.requests) == before
        assert (await browser.request("POST", "/api/leaky/x", json={})).status_code == 200
        # X-CSRF stays required on every /api call
        assert (await browser.request("GET", "/api/public/x", csrf=False)).status_code == 403
    finally:
        await close_clients(rs)


async def test_a_resource_the_auth_server_refuses(
    route_stack: Callable[..., RouteStack], caplog: pytest.LogCaptureFixture
) -> None:
    rs = route_stack()
    browser = rs.browser()
    try:
        await rs.login(browser)
        stray = await browser.request("GET", "/api/stray/x")
        # DESIGN §12: a resource the provider refuses to the client is a configuration error, not a passing one
        assert stray.status_code == 500 and stray.json()["error"] == "server_misconfigured"
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "bff.auth_client"]
        assert len(errors) == 1 and "invalid_target" in errors[0] and "BFF_ROUTES" in errors[0], errors
        assert rs.echo.seen("/x") == []
        # invalid_target is refused before rotation: the login lives on
        assert (await browser.request("GET", "/api/orders/me")).status_code == 200
        assert (await browser.request("GET", "/bff/user")).status_code == 200
    finally:
        await close_clients(rs)


async def test_two_processes_route_tokens_renew_together_and_a_logout_closes_sockets_everywhere(
    route_stack: Callable[..., RouteStack], process_factory: Any
) -> None:
    """Each route token is a refresh with the session's one refresh token: renewing several at once — here on two
    BFF processes — must serialize them, or the second use of a rotated refresh token is reuse and the login is
    revoked."""
    rs = route_stack(access_ttl=2, bff_thread=False, BFF_REFRESH_SKEW="0")
    port = int(rs.stack.bff_url.rsplit(":", 1)[1])
    process_factory(["-m", "bff", "serve"], rs.stack.bff_env, port=port)
    second = process_factory(["-m", "bff", "serve"], rs.stack.bff_env)
    browser = rs.browser()
    try:
        await rs.login(browser)
        other = rs.browser(second.url)
        other.cookies = browser.cookies
        for _ in range(2):
            paths = ["/api/orders/me", "/api/leaky/x", "/api/other/x", "/api/maybe/x"] * 5
            responses = await asyncio.gather(
                *((browser if i % 2 else other).request("GET", p) for i, p in enumerate(paths))
            )
            assert [r.status_code for r in responses] == [200] * len(paths)
            await asyncio.sleep(2.1)  # every token has expired
        assert (await browser.request("GET", "/bff/user")).status_code == 200
        # one refresh per resource and round (orders, leaky and maybe share ORDERS), never one per request
        assert rs.stack.gate.refreshes == 4

        # a WebSocket held by the first process is closed with 1008 when the logout happens on the second
        await _closed_after_logout(rs.stack.bff_url, second.url, rs, browser)
    finally:
        await close_clients(rs)


def client_grants(auth_url: str) -> float:
    text = httpx.get(auth_url + "/metrics", timeout=5).text
    line = re.search(r'auth_token_grants_total\{grant_type="client_credentials",outcome="ok"\} (\S+)', text)
    return float(line.group(1)) if line else 0.0


async def test_client_token_one_grant_at_a_time_renewed_before_expiry(route_stack: Callable[..., RouteStack]) -> None:
    rs = route_stack(access_ttl=2, BFF_REFRESH_SKEW="1")
    browser = rs.browser()
    try:
        await rs.login(browser)
        responses = await asyncio.gather(*(browser.request("GET", "/api/app/x") for _ in range(20)))
        assert [r.status_code for r in responses] == [200] * 20
        tokens = {bearer(r.json()["headers"]) for r in responses}
        assert len(tokens) == 1 and client_grants(rs.stack.auth_url) == 1  # 20 concurrent requests, one grant
        expires = claims_of(tokens.pop())["exp"]
        await asyncio.sleep(1.2)  # within the skew of its expiry: renewed before it, never used expired
        renewed = bearer((await browser.request("GET", "/api/app/x")).json()["headers"])
        assert claims_of(renewed)["exp"] > expires and client_grants(rs.stack.auth_url) == 2
        assert rs.stack.gate.refreshes == 0  # the app's token never touches the user's refresh token
    finally:
        await close_clients(rs)


async def test_sse_reaches_the_browser_while_the_upstream_holds_the_stream(
    route_stack: Callable[..., RouteStack],
) -> None:
    rs = route_stack(access_ttl=2, BFF_REFRESH_SKEW="0")
    browser = rs.browser()
    try:
        await rs.login(browser)
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        async with httpx.AsyncClient(base_url=rs.stack.bff_url, timeout=10) as client:
            started = time.monotonic()
            async with client.stream("GET", "/api/maybe/events", headers={"X-CSRF": "1", "Cookie": cookie}) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                chunks = response.aiter_raw()
                first = await asyncio.wait_for(chunks.__anext__(), 5)
                assert b"data: first" in first
                assert not rs.echo.release.is_set()  # the upstream is still holding the stream open
                assert time.monotonic() - started < 5
                # the stream's token expires and is refreshed under it: the stream goes on
                await asyncio.sleep(2.1)
                assert (await browser.request("GET", "/api/leaky/x")).status_code == 200
                assert rs.stack.gate.refreshes == 2
                rs.echo.release.set()
                rest = b"".join([chunk async for chunk in chunks])
                assert b"data: last" in rest
    finally:
        await close_clients(rs)


# --- WebSockets -----------------------------------------------------------------------------------------------------


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


async def test_websocket_echo_and_handshake_rules(route_stack: Callable[..., RouteStack]) -> None:
    rs = route_stack()
    browser = rs.browser()
    try:
        await rs.login(browser)
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        origin = rs.stack.bff_url
        url = ws_url(rs.stack.bff_url, "/api/chat/ws/room")
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, headers={"Cookie": cookie, "Origin": origin}, protocols=["chat"]) as ws:
                assert ws.protocol == "chat"  # the upstream's choice of subprotocol reaches the browser
                await ws.send_str("hello")
                assert (await ws.receive(timeout=5)).data == "echo:hello"
                await ws.send_bytes(b"\x00\x01")
                assert (await ws.receive(timeout=5)).data == b"echo:\x00\x01"
                await ws.send_str("close:4001")  # the upstream closes with 4001: the browser sees 4001
                closing = await ws.receive(timeout=5)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4001
            upstream = rs.echo.seen("/ws/room")[-1]["headers"]
            assert "cookie" not in upstream
            claims = claims_of(bearer(upstream))
            assert claims["aud"] == ORDERS and claims["sid"]

            refusals = [
                ({"Cookie": cookie, "Origin": "https://evil.example"}, url, 403),
                ({"Cookie": cookie}, url, 403),
                ({"Cookie": cookie, "Origin": "null"}, url, 403),
                ({"Origin": origin}, url, 401),
                ({"Cookie": "__Host-session=" + "A" * 43, "Origin": origin}, url, 401),
                ({"Cookie": cookie, "Origin": origin}, ws_url(rs.stack.bff_url, "/api/leaky/ws/x"), 404),
                ({"Cookie": cookie, "Origin": origin}, ws_url(rs.stack.bff_url, "/api/nope/ws/x"), 404),
            ]
            for headers, target, status in refusals:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(target, headers=headers)
                assert refused.value.status == status, (headers, target)
            # a none route takes sockets without a session, and sends no token
            async with session.ws_connect(ws_url(rs.stack.bff_url, "/api/public/ws/open"), origin=origin) as ws:
                await ws.send_str("hi")
                assert (await ws.receive(timeout=5)).data == "echo:hi"
            assert "authorization" not in rs.echo.seen("/ws/open")[-1]["headers"]
    finally:
        await close_clients(rs)


async def _closed_after_logout(bff_url: str, logout_url: str, rs: RouteStack, browser: Browser) -> None:
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    async with aiohttp.ClientSession() as session:
        url = ws_url(bff_url, "/api/chat/ws/live")
        async with session.ws_connect(url, headers={"Cookie": cookie, "Origin": rs.stack.bff_url}) as ws:
            await ws.send_str("ping")
            assert (await ws.receive(timeout=5)).data == "echo:ping"
            async with httpx.AsyncClient(timeout=10) as client:
                out = await client.post(logout_url + "/bff/logout", headers={"Cookie": cookie, "X-CSRF": "1"})
                assert out.status_code in (200, 204)
            logged_out = time.monotonic()
            closing = await ws.receive(timeout=5)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008, closing
            assert time.monotonic() - logged_out < 2.0


async def test_websocket_closed_with_1008_after_logout(route_stack: Callable[..., RouteStack]) -> None:
    rs = route_stack()
    browser = rs.browser()
    try:
        await rs.login(browser)
        await _closed_after_logout(rs.stack.bff_url, rs.stack.bff_url, rs, browser)
    finally:
        await close_clients(rs)


async def test_websocket_closed_with_1008_when_the_session_expires(route_stack: Callable[..., RouteStack]) -> None:
    rs = route_stack(BFF_IDLE_TTL="2")
    browser = rs.browser()
    try:
        await rs.login(browser)
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        async with aiohttp.ClientSession() as session:
            url = ws_url(rs.stack.bff_url, "/api/chat/ws/idle")
            async with session.ws_connect(url, headers={"Cookie": cookie, "Origin": rs.stack.bff_url}) as ws:
                opened = time.monotonic()
                await ws.send_str("still here")  # messages on the socket do not renew the session's idle life
                assert (await ws.receive(timeout=5)).data == "echo:still here"
                closing = await ws.receive(timeout=6)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
                assert time.monotonic() - opened < 2 + 2.0
    finally:
        await close_clients(rs)


async def test_websocket_cap_answers_503(route_stack: Callable[..., RouteStack]) -> None:
    rs = route_stack(BFF_MAX_WEBSOCKETS="1")
    try:
        async with aiohttp.ClientSession() as session:
            url = ws_url(rs.stack.bff_url, "/api/public/ws/cap")
            async with session.ws_connect(url, origin=rs.stack.bff_url):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(url, origin=rs.stack.bff_url)
                assert refused.value.status == 503
                async with session.get(rs.stack.bff_url + "/metrics") as response:
                    metrics = await response.text()
                assert 'bff_websockets_total{outcome="503"} 1.0' in metrics
                assert 'bff_websockets_total{outcome="opened"} 1.0' in metrics
                assert "bff_websockets_open 1.0" in metrics
            await asyncio.sleep(0.2)
            async with session.ws_connect(url, origin=rs.stack.bff_url) as ws:  # the slot is free again
                await ws.send_str("x")
                assert (await ws.receive(timeout=5)).data == "echo:x"
    finally:
        await close_clients(rs)


async def test_one_session_cannot_take_every_socket(route_stack: Callable[..., RouteStack]) -> None:
    """Issue #18 item 1: one session opened every WebSocket slot of a process (1000 in 0.8 s) and everyone else got
    503. Now its own WebSockets plus streams stop at BFF_MAX_SOCKETS_PER_SESSION (429, for it alone)."""
    rs = route_stack(BFF_MAX_SOCKETS_PER_SESSION="3")
    hog, other = rs.browser(), rs.browser()
    try:
        await rs.login(hog)
        await rs.login(other)
        jar = {b: "; ".join(f"{k}={v}" for k, v in b.cookies.items()) for b in (hog, other)}
        url = ws_url(rs.stack.bff_url, "/api/chat/ws/hog")
        async with aiohttp.ClientSession() as session:
            held = [
                await session.ws_connect(url, headers={"Cookie": jar[hog], "Origin": rs.stack.bff_url})
                for _ in range(2)
            ]
            stream = await session.get(
                rs.stack.bff_url + "/api/maybe/events", headers={"Cookie": jar[hog], "X-CSRF": "1"}
            )
            assert stream.status == 200 and (await stream.content.readline()) == b"event: hello\n"
            # the fourth of the session: a WebSocket and a stream, both 429 JSON
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url, headers={"Cookie": jar[hog], "Origin": rs.stack.bff_url})
            assert refused.value.status == 429
            async with session.get(
                rs.stack.bff_url + "/api/maybe/events", headers={"Cookie": jar[hog], "X-CSRF": "1"}
            ) as response:
                assert response.status == 429
                assert (await response.json())["error"] == "too_many_sockets"
            # plain calls of that session still work, and another session is unaffected
            assert (await hog.request("GET", "/api/leaky/x")).status_code == 200
            async with session.ws_connect(url, headers={"Cookie": jar[other], "Origin": rs.stack.bff_url}) as ws:
                await ws.send_str("hi")
                assert (await ws.receive(timeout=5)).data == "echo:hi"
            async with session.get(rs.stack.bff_url + "/metrics") as response:
                metrics = await response.text()
            assert 'bff_session_socket_cap_total{kind="websocket",scope="session"} 1.0' in metrics
            assert 'bff_session_socket_cap_total{kind="stream",scope="session"} 1.0' in metrics
            # a slot given back (a socket closed) is free again
            await held.pop().close()
            await asyncio.sleep(0.2)
            async with session.ws_connect(url, headers={"Cookie": jar[hog], "Origin": rs.stack.bff_url}) as ws:
                await ws.send_str("again")
                assert (await ws.receive(timeout=5)).data == "echo:again"
            rs.echo.release.set()
            stream.close()
            for ws in held:
                await ws.close()
    finally:
        await close_clients(rs)


async def test_one_user_with_many_sessions_cannot_take_every_socket(route_stack: Callable[..., RouteStack]) -> None:
    """A user who logs in again and again gets a new session each time: BFF_MAX_SOCKETS_PER_USER bounds all their
    sessions together in a process (429 for them alone)."""
    rs = route_stack(BFF_MAX_SOCKETS_PER_SESSION="2", BFF_MAX_SOCKETS_PER_USER="3")
    first, second, bob = rs.browser(), rs.browser(), rs.browser()
    try:
        await rs.login(first)
        await rs.login(second)
        await rs.stack.login(bob, "bob")
        url = ws_url(rs.stack.bff_url, "/api/chat/ws/many")

        def headers(browser: Browser) -> dict[str, str]:
            return {"Cookie": "; ".join(f"{k}={v}" for k, v in browser.cookies.items()), "Origin": rs.stack.bff_url}

        async with aiohttp.ClientSession() as session:
            held = [await session.ws_connect(url, headers=headers(b)) for b in (first, first, second)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url, headers=headers(second))  # the session has room, the user has not
            assert refused.value.status == 429
            async with session.get(
                rs.stack.bff_url + "/api/maybe/events", headers={**headers(second), "X-CSRF": "1"}
            ) as response:
                assert response.status == 429 and "You have too many" in (await response.json())["error_description"]
            async with session.ws_connect(url, headers=headers(bob)) as ws:  # another user: unaffected
                await ws.send_str("hi")
                assert (await ws.receive(timeout=5)).data == "echo:hi"
            async with session.get(rs.stack.bff_url + "/metrics") as response:
                assert 'bff_session_socket_cap_total{kind="websocket",scope="user"} 1.0' in await response.text()
            await held.pop(0).close()
            await asyncio.sleep(0.2)
            async with session.ws_connect(url, headers=headers(second)) as ws:  # given back: room again
                await ws.send_str("again")
                assert (await ws.receive(timeout=5)).data == "echo:again"
            for ws in held:
                await ws.close()
    finally:
        rs.echo.release.set()
        await close_clients(rs)


# --- answer headers ---------------------------------------------------------------------------------------------


async def test_every_answer_has_one_date_and_one_server_header(route_stack: Callable[..., RouteStack]) -> None:
    """An upstream's Date and Server were passed on beside the BFF's own server's: two of each (issue #10 item 9a)."""
    rs = route_stack(BFF_TRUSTED_PROXIES="127.0.0.1/32")  # the test client asks /bff/auth as the proxy would
    browser = rs.browser()

    def once(headers: Any, where: str) -> None:
        for name in ("date", "server"):
            assert len(headers.getall(name, [])) == 1, (where, name, list(headers.items()))

    try:
        await rs.login(browser)
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        auth = {"X-CSRF": "1", "Cookie": cookie}
        async with aiohttp.ClientSession(rs.stack.bff_url) as session:
            for path in ("/api/orders/notes", "/api/leaky/x", "/api/public/x", "/api/orders/../x", "/bff/user"):
                async with session.get(path, headers=auth) as response:
                    once(response.headers, path)
            rs.echo.release.set()  # the event stream ends at once
            async with session.get("/api/maybe/events", headers=auth) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                once(response.headers, "stream")
            forward = {**auth, "X-Original-URI": "/api/orders/notes", "X-Original-Method": "GET"}
            async with session.get("/bff/auth", headers=forward) as response:  # from 127.0.0.1: a trusted proxy
                assert response.status == 200
                once(response.headers, "/bff/auth")
            ws = await session.ws_connect("/api/chat/ws/room", headers={"Cookie": cookie, "Origin": rs.stack.bff_url})
            try:
                assert ws._response is not None
                once(ws._response.headers, "websocket handshake")
            finally:
                await ws.close()
    finally:
        await close_clients(rs)
