"""DESIGN §8 through real nginx: Debian's nginx with deploy/nginx's configuration in front of the BFF (`bff serve`, a
process), the auth server, the resource server and a small WebSocket upstream, all on loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.bff.doubles import Browser
from tests.conftest import ServiceProcess, free_port
from tests.e2e.conftest import Stack
from tests.edge import Edge

pytestmark = pytest.mark.anyio

ATTACKER = "127.0.0.3"  # a loopback address the BFF does not trust (BFF_TRUSTED_PROXIES is nginx's 127.0.0.1 alone)
# a browser's trace context (W3C Trace Context's example ids), for what an upstream behind the edge is sent
BROWSERS_TRACE, BROWSERS_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
BROWSERS_TRACEPARENT = f"00-{BROWSERS_TRACE}-{BROWSERS_SPAN}-01"


def assert_in_the_browsers_trace_under_the_bffs_answer(upstream_saw: dict[str, str]) -> None:
    """The upstream got the browser's trace with the BFF's answer (a span of its own) as the parent, flagged as the BFF
    decided: not the browser's span nor its word."""
    version, trace_id, parent, flags = upstream_saw["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", BROWSERS_TRACE, "01") and parent not in (BROWSERS_SPAN, "0" * 16)


@dataclass
class EdgeStack:
    stack: Stack
    edge: Edge
    bff: ServiceProcess
    seen: list[dict[str, str]]  # headers the "chat" upstream received, request by request
    chat: str  # its host:port

    @property
    def url(self) -> str:
        return self.edge.url

    def cookie_header(self, browser: Browser) -> str:
        return "; ".join(f"{k}={v}" for k, v in browser.cookies.items())


async def chat_upstream(seen: list[dict[str, str]]) -> tuple[web.AppRunner, int]:
    """A WebSocket echo and a header mirror, recording what each request carried."""

    async def ws(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            await socket.send_str("echo: " + message.data)
        return socket

    async def headers(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response(
            {"ok": True}, headers={"Set-Cookie": "upstream=evil; Path=/", "Clear-Site-Data": '"*"'}
        )

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/headers", headers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@contextlib.asynccontextmanager
async def running_edge(
    stack_factory: Any, process_factory: Any, uds: bool = False, access_log: bool = False, **bff_extra: str
) -> AsyncIterator[EdgeStack]:
    # nginx takes the port the stack gave "the BFF" (so the auth server's redirect URI points at nginx); the BFF
    # process listens on another one, behind it (``uds``: on a Unix socket, bff serve --uds).
    trusted = bff_extra.pop("BFF_TRUSTED_PROXIES", "127.0.0.1/32")
    stack: Stack = stack_factory(bff_thread=False, BFF_TRUSTED_PROXIES=trusted, **bff_extra)
    seen: list[dict[str, str]] = []
    runner, chat_port = await chat_upstream(seen)
    rs_addr = stack.rs_url.removeprefix("http://")
    gone_port = free_port()
    gone = f"127.0.0.1:{gone_port}"  # nothing listens there
    stack.bff_env["BFF_ROUTES"] = json.dumps(
        {
            "gone": f"http://{gone}",
            "notes": stack.rs_url,
            "chat": {"url": f"http://127.0.0.1:{chat_port}", "websocket": True, "methods": ["GET", "POST"]},
        }
    )
    edge_port = int(stack.bff_url.rsplit(":", 1)[1])
    bff_port = free_port()
    while bff_port in (edge_port, chat_port, gone_port):
        bff_port = free_port()
    socket = Path(tempfile.mkdtemp(prefix="jwt-bff-uds-")) / "bff.sock"
    serve = ["-m", "bff", "serve", *(["--uds", str(socket)] if uds else []), *(["--access-log"] if access_log else [])]
    bff = process_factory(serve, stack.bff_env, port=bff_port, health_path="/readyz")
    edge = Edge(
        edge_port,
        f"unix:{socket}" if uds else f"127.0.0.1:{bff.port}",
        {"notes": rs_addr, "live": rs_addr, "chat": f"127.0.0.1:{chat_port}", "gone": gone},
    )
    try:
        edge.start()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))  # a missing tool is a failure, never a skip
    try:
        yield EdgeStack(stack, edge, bff, seen, f"127.0.0.1:{chat_port}")
    finally:
        edge.cleanup()
        await runner.cleanup()


@pytest.fixture
async def edge_stack(stack_factory: Any, process_factory: Any) -> AsyncIterator[EdgeStack]:
    async with running_edge(stack_factory, process_factory) as edge:
        yield edge


async def test_the_notes_api_through_nginx(edge_stack: EdgeStack) -> None:
    stack, url = edge_stack.stack, edge_stack.url
    browser = stack.browser(url)
    callback = await stack.login(browser, "alice")  # /bff/login and /bff/callback through nginx
    assert callback.status_code == 302 and browser.cookies, callback.text

    me = await browser.request("GET", "/api/notes/me")
    assert me.status_code == 200, me.text
    assert me.json()["client_id"] == "bff" and me.headers.get("server") == "nginx"  # nginx, not the BFF, moved it
    created = await browser.request("POST", "/api/notes/notes", json={"text": "through nginx"})
    assert created.status_code == 201, created.text
    assert "through nginx" in (await browser.request("GET", "/api/notes/notes")).text

    # What an upstream gets: the token, no cookie, no CSRF header; what it sets never reaches the browser.
    underscored = {"X_Auth_Request_Sub": "mallory", "X_Forwarded_For": "203.0.113.66"}  # CGI reads _ as -
    mirrored = await browser.request("GET", "/api/chat/headers", headers=underscored)
    assert mirrored.status_code == 200 and "set-cookie" not in mirrored.headers
    upstream_saw = {k.lower(): v for k, v in edge_stack.seen[-1].items()}
    assert not [name for name in upstream_saw if "_" in name], upstream_saw  # nginx: underscores_in_headers off
    assert upstream_saw["authorization"].startswith("Bearer eyJ") and upstream_saw["x-auth-request-sub"]
    assert "cookie" not in upstream_saw and "x-csrf" not in upstream_saw
    assert upstream_saw["host"] == edge_stack.chat  # as in BFF_ROUTES, as the BFF's own proxy sends it (DPoP's htu)

    # Refusals are the BFF's JSON errors, never a redirect and never a token.
    anonymous = await stack.browser(url).request("GET", "/api/notes/me")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "login_required"
    no_csrf = await browser.request("GET", "/api/notes/me", csrf=False)
    assert no_csrf.status_code == 403 and no_csrf.json()["error"] == "csrf"
    foreign = await browser.request(
        "POST", "/api/notes/notes", json={"text": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and foreign.json()["error"] == "csrf"
    steer = await browser.request("GET", "/api/notes/me", headers={"X-Forwarded-Uri": "/api/chat/headers"})
    assert steer.status_code == 200 and steer.json()["client_id"] == "bff"  # nginx drops the browser's copy
    oversized = await browser.request("GET", "/api/notes/me", headers={"X-Padding": "a" * 9000})
    assert oversized.status_code in (400, 431) and "eyJ" not in oversized.text  # nginx's 8 KiB header limit
    calls = len(edge_stack.seen)
    refused = await browser.request("DELETE", "/api/chat/headers")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, POST"
    assert len(edge_stack.seen) == calls  # the upstream was not called
    assert refused.json()["error"] == "method_not_allowed"
    down = await browser.request("GET", "/api/gone/x")
    assert down.status_code == 502 and down.json()["error"] == "bad_gateway"
    unknown = await browser.request("GET", "/api/nope/x")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    dots = await browser.request("GET", "/api/notes/%2e%2e/healthz")
    assert dots.status_code == 404 and dots.json()["error"] == "not_found"  # nginx resolved it to /api/healthz
    backslash = await browser.request("GET", "/api/notes/x%5C..%5Cme")  # nginx passes it on, the BFF refuses it
    assert backslash.status_code == 400 and backslash.json()["error"] == "invalid_request"
    # /bff/auth is nginx's alone: from outside it does not exist, whatever is forged.
    direct = await browser.request("GET", "/bff/auth", headers={"X-Original-URI": "/api/notes/me"})
    assert direct.status_code == 404 and "authorization" not in direct.headers
    encoded = await browser.request("GET", "/bff/%61uth", headers={"X-Original-URI": "/api/notes/me"})
    assert encoded.status_code == 404 and "authorization" not in encoded.headers
    assert "through nginx" not in (await browser.request("POST", "/api/notes/notes", csrf=False, json={})).text

    stolen = edge_stack.cookie_header(browser)
    assert "session=" in stolen
    logout = await browser.request("POST", "/bff/logout")
    assert logout.status_code == 200
    after = await stack.browser(url).request("GET", "/api/notes/me", headers={"Cookie": stolen})
    assert after.status_code == 401 and after.json()["error"] == "login_required"
    assert browser.leaked() == []  # no token ever reached the browser: not in a body, not in a header


async def test_the_upstreams_log_lines_join_the_bffs_answer(stack_factory: Any, process_factory: Any) -> None:
    """DESIGN §12 behind forward auth as behind the BFF's proxy: the upstream gets the request id of the BFF's
    /bff/auth access line and the browser's trace with the BFF's answer as the parent, not the browser's own span."""
    async with running_edge(stack_factory, process_factory, access_log=True) as edge:
        browser = edge.stack.browser(edge.url)
        assert (await edge.stack.login(browser, "tess")).status_code == 302
        mirrored = await browser.request("GET", "/api/chat/headers", headers={"traceparent": BROWSERS_TRACEPARENT})
        assert mirrored.status_code == 200, mirrored.text
        upstream_saw = {k.lower(): v for k, v in edge.seen[-1].items()}
        lines = [json.loads(line) for line in edge.bff.output().splitlines() if line.startswith("{")]
        (asked,) = [line for line in lines if line.get("route") == "/bff/auth" and line["trace_id"] == BROWSERS_TRACE]
        assert upstream_saw["x-request-id"] == asked["request_id"]
        assert_in_the_browsers_trace_under_the_bffs_answer(upstream_saw)


async def test_the_largest_answer_the_bff_gives_reaches_the_upstream() -> None:
    """nginx reads an auth answer's headers into proxy_buffer_size, one page (4 KiB) by default: a token of ~3.7 KiB
    with the request id and trace made it a 503 ("upstream sent too big header", found by a review). The template
    gives the auth location 32 KiB: a 6 KiB token (an upstream's own limit is a line of 8 KiB) beside identity headers
    at the BFF's limit of 4 KiB each (8 KiB of claims in all) and a DPoP proof reach the upstream."""
    token = "Bearer " + "t" * 6144
    identity = {"X-Auth-Request-User": "u" * 4000, "X-Auth-Request-Groups": "g" * 4000}
    answer = {
        "Authorization": token,
        "DPoP": "p" * 1200,
        "X-Auth-Request-Sub": "s" * 255,
        **identity,
        "X-Request-ID": "r" * 128,
        "traceparent": f"00-{'1' * 32}-{'2' * 16}-01",
        "Cache-Control": "no-store",
    }

    async def ask(request: web.Request) -> web.Response:
        return web.Response(status=200, headers=answer)

    bff = web.Application()
    bff.router.add_route("*", "/{tail:.*}", ask)
    bff_runner = web.AppRunner(bff, access_log=None)
    await bff_runner.setup()
    bff_port = free_port()
    await web.TCPSite(bff_runner, "127.0.0.1", bff_port).start()
    seen: list[dict[str, str]] = []
    runner, mirror_port = await chat_upstream(seen)
    mirror = f"127.0.0.1:{mirror_port}"
    edge = Edge(free_port(), f"127.0.0.1:{bff_port}", {"notes": mirror, "live": mirror})
    try:
        edge.start()
        async with httpx.AsyncClient(base_url=edge.url) as client:
            response = await client.get("/api/notes/headers", headers={"X-CSRF": "1"})
        assert response.status_code == 200, (response.text, edge.error_log)
        upstream_saw = {k.lower(): v for k, v in seen[-1].items()}
        assert {name: upstream_saw[name.lower()] for name in answer if name != "Cache-Control"} == {
            name: value for name, value in answer.items() if name != "Cache-Control"
        }
    finally:
        edge.cleanup()
        await runner.cleanup()
        await bff_runner.cleanup()


async def test_a_sessions_address_is_the_one_nginx_saw(edge_stack: EdgeStack) -> None:
    """DESIGN §14: "Your sessions" shows each login's network. Behind nginx (a trusted proxy) the BFF reads
    X-Forwarded-For, so nginx must set it: a browser's own copy would let a thief's login pose as another network."""
    stack = edge_stack.stack
    browser = stack.browser(edge_stack.url)
    browser.client.headers["X-Forwarded-For"] = "203.0.113.9"
    assert (await stack.login(browser, "erin")).status_code == 302
    listed = await browser.request("GET", "/bff/sessions")
    assert listed.status_code == 200, listed.text
    assert [s["ip"] for s in listed.json()["sessions"]] == ["127.0.0.0/24"]
    # issue #18 item 8a through nginx: HEAD on a GET route (chat allows GET and POST) is answered, not 405
    head = await browser.request("HEAD", "/api/chat/headers")
    assert head.status_code == 200 and head.content == b"", head.headers


def closed_connections(port: int) -> int:
    """TCP connections to or from ``port`` in TIME_WAIT: one per connection closed lately (/proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state == "06" and port in (int(local.split(":")[1], 16), int(remote.split(":")[1], 16)):
            count += 1
    return count


async def test_nginx_keeps_its_connections_to_the_bff(edge_stack: EdgeStack) -> None:
    """The auth answer has no body, so nginx keeps the upstream connection for the next subrequest (with a body it
    opened one per request, and throughput halved)."""
    stack = edge_stack.stack
    browser = stack.browser(edge_stack.url)
    await stack.login(browser, "dave")
    before = closed_connections(edge_stack.bff.port)
    for _ in range(30):
        assert (await browser.request("GET", "/api/notes/me")).status_code == 200
    assert closed_connections(edge_stack.bff.port) - before <= 2


async def test_no_upgrade_but_a_websocket_reaches_an_upstream_through_nginx(edge_stack: EdgeStack) -> None:
    """Found attacking the edge: a GET with Upgrade: h2c was approved and passed on with the token, and an upstream
    answering 101 made it a tunnel nothing checked again. The BFF refuses it (400), and a WebSocket on a route that
    takes none (404); nginx passes no Upgrade but websocket on in any case."""
    browser = edge_stack.stack.browser(edge_stack.url)
    await edge_stack.stack.login(browser, "uri")
    before = len(edge_stack.seen)
    h2c = await browser.request("GET", "/api/chat/headers", headers={"Upgrade": "h2c", "Connection": "Upgrade"})
    assert h2c.status_code == 400 and h2c.json()["error"] == "invalid_request", h2c.text
    websocket = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    other = await browser.request("GET", "/api/notes/me", headers={**websocket, "Origin": edge_stack.url})
    assert other.status_code == 404, other.text
    assert len(edge_stack.seen) == before  # neither reached an upstream
    plain = await browser.request("GET", "/api/chat/headers")
    assert plain.status_code == 200 and "upgrade" not in {k.lower() for k in edge_stack.seen[-1]}


async def test_a_websocket_through_nginx(edge_stack: EdgeStack) -> None:
    stack, url = edge_stack.stack, edge_stack.url
    browser = stack.browser(url)
    await stack.login(browser, "bob")
    ws_url = url.replace("http://", "ws://") + "/api/chat/ws"
    async with aiohttp.ClientSession() as session:
        headers = {"Cookie": edge_stack.cookie_header(browser), "Origin": url}
        async with session.ws_connect(ws_url, headers=headers) as socket:
            await socket.send_str("hello")
            reply = await socket.receive(timeout=5)
            assert reply.data == "echo: hello"
        upstream_saw = {k.lower(): v for k, v in edge_stack.seen[-1].items()}
        assert upstream_saw["authorization"].startswith("Bearer ") and "cookie" not in upstream_saw
        assert upstream_saw["upgrade"].lower() == "websocket"
        refused = [
            {"Cookie": edge_stack.cookie_header(browser), "Origin": "https://evil.example"},  # cross-site page
            {"Cookie": edge_stack.cookie_header(browser)},  # no Origin: not a browser we can judge
            {"Origin": url},  # no session
        ]
        for bad in refused:
            with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
                async with session.ws_connect(ws_url, headers=bad):
                    pass
            assert failed.value.status in (401, 403), bad
    assert len(edge_stack.seen) == 1  # the refused handshakes never reached the upstream


async def test_nginx_asks_over_a_unix_socket_only_when_its_peers_are_trusted(
    stack_factory: Any, process_factory: Any
) -> None:
    """bff serve --uds (nginx: server unix:PATH): ~5% less CPU a forward-auth question (docs/benchmarks). A peer on the
    socket has no address, so it is a trusted proxy only when BFF_TRUSTED_PROXIES names unix: then its questions are
    answered and its X-Forwarded-For believed; otherwise nginx gets no token."""
    async with running_edge(
        stack_factory, process_factory, uds=True, access_log=True, BFF_TRUSTED_PROXIES="unix"
    ) as edge:
        browser = edge.stack.browser(edge.url)
        browser.client.headers["X-Forwarded-For"] = "203.0.113.9"  # a browser's own: nginx replaces it
        assert (await edge.stack.login(browser, "uma")).status_code == 302
        me = await browser.request("GET", "/api/notes/me")
        assert me.status_code == 200 and me.headers.get("server") == "nginx", me.text
        sessions = (await browser.request("GET", "/bff/sessions")).json()["sessions"]
        assert [s["ip"] for s in sessions] == ["127.0.0.0/24"]  # the address nginx saw, from its X-Forwarded-For
        # the access line: the socket's peer has no address; the client is the one nginx names
        lines = [json.loads(line) for line in edge.bff.output().splitlines() if line.startswith("{")]
        (listing,) = [line for line in lines if line.get("route") == "/bff/sessions"]
        assert (listing["client"], listing["forwarded_for"]) == (None, "127.0.0.1")
        asked = [line for line in lines if line.get("route") == "/bff/auth"]  # forward auth's questions: the same
        assert asked and all((q["client"], q["forwarded_for"]) == (None, "127.0.0.1") for q in asked), asked
    async with running_edge(stack_factory, process_factory, uds=True, BFF_TRUSTED_PROXIES="127.0.0.1/32") as edge:
        browser = edge.stack.browser(edge.url)
        assert (await edge.stack.login(browser, "vic")).status_code == 302  # the BFF's own pages still answer
        refused = await browser.request("GET", "/api/notes/me")
        assert refused.status_code == 403 and "client_id" not in refused.text, refused.text


async def test_a_tcp_peer_that_resets_before_it_is_accepted_is_not_taken_for_the_sockets(
    stack_factory: Any, process_factory: Any
) -> None:
    """Found attacking BFF_TRUSTED_PROXIES=unix: a client that sends its question and resets the connection before
    the BFF accepts it leaves no address to read (uvicorn's client is None), yet Linux still delivers its bytes. On a
    BFF listening on TCP that is no Unix-socket peer: refused, never answered 200 (here: the BFF stopped while the
    questions arrive, so that each is accepted only after its reset)."""
    stack: Stack = stack_factory(bff_thread=False, BFF_TRUSTED_PROXIES="unix")
    port = int(stack.bff_url.rsplit(":", 1)[1])
    bff = process_factory(["-m", "bff", "serve"], stack.bff_env, port=port, health_path="/readyz")
    browser = stack.browser()
    assert (await stack.login(browser, "wes")).status_code == 302
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    question = (
        f"GET /bff/auth HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nX-CSRF: 1\r\n"
        "X-Original-URI: /api/notes/me\r\nX-Original-Method: GET\r\n\r\n"
    ).encode()
    assert bff.proc is not None
    os.kill(bff.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(question)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: a reset
    finally:
        os.kill(bff.proc.pid, signal.SIGCONT)
    await asyncio.sleep(1.0)
    metrics = (await browser.request("GET", "/metrics")).text
    answered = [line for line in metrics.splitlines() if line.startswith("bff_requests_total{") and "/bff/auth" in line]
    assert answered and not any('status="200"' in line for line in answered), answered
    assert "BFF_TRUSTED_PROXIES names unix, but bff serve listens on TCP" in bff.output()  # said at start


async def test_bff_auth_from_an_untrusted_address_is_403_without_a_token(edge_stack: EdgeStack) -> None:
    stack = edge_stack.stack
    browser = stack.browser(edge_stack.url)
    await stack.login(browser, "carol")
    cookie = edge_stack.cookie_header(browser)
    forged = {"Cookie": cookie, "X-CSRF": "1", "X-Original-URI": "/api/notes/me", "X-Original-Method": "GET"}
    # The same question from nginx's address is answered: the cookie is good.
    async with httpx.AsyncClient() as nginx_address:
        trusted = await nginx_address.get(edge_stack.bff.url + "/bff/auth", headers=forged)
    assert trusted.status_code == 200 and trusted.headers["authorization"].startswith("Bearer ")
    transport = httpx.AsyncHTTPTransport(local_address=ATTACKER)
    async with httpx.AsyncClient(transport=transport, base_url=edge_stack.bff.url) as attacker:
        for headers in (
            forged,
            {**forged, "X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"},
            {"Cookie": cookie, "X-CSRF": "1", "X-Forwarded-Uri": "/api/notes/me"},
        ):
            answer = await attacker.get("/bff/auth", headers=headers)
            assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
            assert "authorization" not in answer.headers and "eyJ" not in answer.text
            assert all("eyJ" not in value for value in answer.headers.values())
        envoy_form = await attacker.get("/bff/auth/api/notes/me", headers={"Cookie": cookie, "X-CSRF": "1"})
        assert envoy_form.status_code == 403 and "authorization" not in envoy_form.headers


async def test_dpop_bound_tokens_through_nginx(stack_factory: Any, process_factory: Any, tmp_path: Path) -> None:
    """DESIGN §9 at the edge: /bff/auth answers with Authorization: DPoP and a proof for the request nginx is about to
    make (its htu is the upstream URL from BFF_ROUTES, the Host nginx sends); the resource server accepts it."""
    key = tmp_path / "dpop.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    async with running_edge(stack_factory, process_factory, BFF_DPOP_KEY_FILE=str(key)) as edge_stack:
        browser = edge_stack.stack.browser(edge_stack.url)
        await edge_stack.stack.login(browser, "erin")
        assert (await browser.request("GET", "/api/chat/headers")).status_code == 200
        upstream_saw = {k.lower(): v for k, v in edge_stack.seen[-1].items()}
        scheme, token = upstream_saw["authorization"].split(" ", 1)
        assert scheme == "DPoP" and upstream_saw["dpop"].count(".") == 2
        payload = token.split(".")[1]
        assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["cnf"]["jkt"]  # bound
        # The resource server takes a bound token only with a valid proof for this very request (method, URL, ath).
        me = await browser.request("GET", "/api/notes/me")
        assert me.status_code == 200, me.text
        assert browser.leaked() == []
