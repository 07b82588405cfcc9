"""What a browser must not get past the BFF to an upstream (issue #10, item 5): dot segments in any spelling,
headers that tell an upstream where the request "really" went or which method it "really" is, and TRACE, TRACK and
CONNECT. Raw HTTP/1.1 on real sockets (a client library would normalise the paths), to a real upstream that records
everything it receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.app import create_app
from bff.proxy import Proxy
from bff.settings import Settings
from servicekit.proxies import TrustedProxies, networks
from tests.bff.doubles import Provider
from tests.conftest import ServerThread

pytestmark = pytest.mark.anyio

CLIMBING = [
    "/api/open/..;/admin",
    "/api/open/a/..;jsessionid=1/admin",
    "/api/open/..%2fadmin",
    "/api/open/..%2Fadmin",
    "/api/open/%2e%2e%2fadmin",
    "/api/open/%2E%2E/admin",
    "/api/open/.%2E/admin",
    "/api/open/a/%2e/b",
    "/api/open/..\\admin",
    "/api/open/a\\..\\..\\admin",
    "/api/open/..%5cadmin",
    "/api/open/%2e%2e%5Cadmin",
    "/api/open/%252e%252e/admin",
    "/api/open/%252e%252e%252fadmin",
    "/api/open/%25252e%25252e/admin",
    "/api/open/%2525252525252e%2525252525252e/admin",
    "/api/open/..%00/admin",
    "/api/open/a%0d%0aX-Injected:%201/b",
    "/api/open/.../admin",
    "/api/open/..%20/admin",
    "/api/open/%u002e%u002e/admin",  # IIS decodes %uXXXX
    "/api/open/%U002E./admin",
    "/api/open/%25u002e%25u002e/admin",
    "/api/open/%c0%ae%c0%ae/admin",  # overlong UTF-8 dots, read as dots by old decoders
    "/api/open/%e0%80%ae./admin",
    "/api/open/%ff/admin",  # not UTF-8 once decoded
]
SPOOFED = {
    "X-Original-URL": "/admin",
    "X-Original-URI": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-Forwarded-Uri": "/admin",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-For": "10.0.0.1",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "Forwarded": "for=10.0.0.1;host=evil.example;proto=https",
    "X-Real-IP": "10.0.0.1",
    "X-Client-IP": "10.0.0.1",
    "True-Client-IP": "10.0.0.1",
    "X-HTTP-Method-Override": "DELETE",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE",
    "X-Original-Method": "DELETE",
    "tracestate": "vendor=forced-sampling",  # W3C Trace Context §3.4: the BFF sends its own trace context
    "baggage": "user=admin,role=root",  # W3C Baggage: what internal services would take for their own
    # a CGI-style upstream (PHP, WSGI) reads an underscore as a dash: these would pass as the names above (nginx drops
    # any name with an underscore by default, and so does the BFF)
    "X_Auth_Request_Sub": "mallory",
    "X_Forwarded_For": "10.0.0.1",
    "X_HTTP_Method_Override": "DELETE",
}


def recorder(seen: list[dict[str, Any]]) -> Starlette:
    async def record(request: Request) -> Response:
        seen.append(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode("latin-1"),
                "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]},
            }
        )
        return JSONResponse({"ok": True})

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "TRACK", "CONNECT"]
    return Starlette(routes=[Route("/{path:path}", record, methods=methods)])


async def raw(port: int, request_line: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [request_line, "Host: bff.test", "X-CSRF: 1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(answer.split(b" ", 2)[1]), answer


@contextlib.contextmanager
def serving(
    rig_env: tuple[Provider, str, dict[str, str]], server_factory: Any, **extra: str
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A BFF on a real socket whose route `open` goes to an upstream that records what it receives."""
    _, upstream_url, env = rig_env
    seen: list[dict[str, Any]] = []
    capture = server_factory(recorder(seen))
    routes = {"notes": upstream_url, "open": {"url": capture.url + "/base", "token": "none"}}
    server = ServerThread(create_app(Settings.from_env({**env, "BFF_ROUTES": json.dumps(routes), **extra})))
    server.server.config.proxy_headers = False  # as the service runs (servicekit): the peer is who it is
    server.start()
    try:
        yield server.port, seen
    finally:
        server.stop()


@pytest.fixture
def bff(
    rig_env: tuple[Provider, str, dict[str, str]], server_factory: Any
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    with serving(rig_env, server_factory) as served:
        yield served


async def test_dot_segments_in_every_spelling_never_reach_the_upstream(bff: tuple[int, list[dict[str, Any]]]) -> None:
    port, seen = bff
    for path in CLIMBING:
        status, answer = await raw(port, f"GET {path} HTTP/1.1")
        assert status == 400 and b'"invalid_request"' in answer, (path, answer[:300])
    assert seen == []
    fine = "/api/open/a.b/c..d/.well-known/x%20y/%2e%2ex/v1.2;v=3?q=../x"
    status, answer = await raw(port, f"GET {fine} HTTP/1.1")
    assert status == 200, answer
    assert seen[0]["raw_path"] == "/base/a.b/c..d/.well-known/x%20y/%2e%2ex/v1.2;v=3"


async def test_spoofable_headers_are_dropped_and_the_bff_says_who_forwarded(
    bff: tuple[int, list[dict[str, Any]]],
) -> None:
    port, seen = bff
    status, answer = await raw(port, "POST /api/open/x HTTP/1.1", {**SPOOFED, "Content-Length": "0"})
    assert status == 200, answer
    received = seen[0]["headers"]
    leaked = {name for name in received if name in {h.lower() for h in SPOOFED} - {"x-forwarded-for"}}
    assert leaked == set() and not [name for name in received if "_" in name], received
    assert received["x-forwarded-for"] == "127.0.0.1"  # the BFF's own, not the browser's 10.0.0.1
    assert seen[0]["method"] == "POST"


async def test_behind_a_trusted_edge_the_upstream_is_told_the_client_the_edge_names(
    rig_env: tuple[Provider, str, dict[str, str]], server_factory: Any
) -> None:
    """With BFF_TRUSTED_PROXIES naming the peer (an edge in front of the BFF), X-Forwarded-For upstream is the
    browser's address as the edge says it, the one the session list shows: not the edge's own, and not a chain
    the browser wrote (only the hop the edge vouches for goes on)."""
    forwarded = {"X-Forwarded-For": "10.9.9.9, 203.0.113.9", "Content-Length": "0"}  # the browser's 10.9.9.9, spoofed
    with serving(rig_env, server_factory, BFF_TRUSTED_PROXIES="127.0.0.1/32") as (port, seen):
        assert (await raw(port, "POST /api/open/x HTTP/1.1", forwarded))[0] == 200
        assert (await raw(port, "POST /api/open/x HTTP/1.1", {"Content-Length": "0"}))[0] == 200
    assert [request["headers"]["x-forwarded-for"] for request in seen] == ["203.0.113.9", "127.0.0.1"]
    with serving(rig_env, server_factory, BFF_TRUSTED_PROXIES="10.0.0.0/8") as (port, seen):  # not the peer
        assert (await raw(port, "POST /api/open/x HTTP/1.1", forwarded))[0] == 200
    assert seen[0]["headers"]["x-forwarded-for"] == "127.0.0.1"  # an untrusted peer's claim is ignored


def test_behind_an_edge_on_the_unix_socket_the_upstream_is_told_the_client_it_names() -> None:
    """`bff serve --uds`: the peer has no address. Listed as `unix`, its X-Forwarded-For names the client upstream;
    not listed, the upstream is told no address at all rather than one the peer claims."""
    scope = {"client": None, "server": ("/run/bff.sock", None), "headers": [(b"x-forwarded-for", b"203.0.113.9")]}
    proxy = Proxy({}, 30)
    proxy.proxies = TrustedProxies(networks("BFF_TRUSTED_PROXIES", "unix", unix=True))
    assert proxy.forwarded_for(scope) == "203.0.113.9"
    assert proxy.forwarded_for({**scope, "headers": []}) == ""
    proxy.proxies = TrustedProxies(networks("BFF_TRUSTED_PROXIES", "127.0.0.1/32", unix=True))
    assert proxy.forwarded_for(scope) == ""


@pytest.mark.parametrize("method", ["TRACE", "TRACK", "CONNECT"])
async def test_trace_track_and_connect_are_405_and_never_forwarded(
    bff: tuple[int, list[dict[str, Any]]], method: str
) -> None:
    port, seen = bff
    status, answer = await raw(port, f"{method} /api/open/x HTTP/1.1")
    if status == 400 and b"Invalid HTTP request" in answer:  # the HTTP parser refused it before the app: fine too
        assert seen == []
        return
    assert status == 405, answer
    allow = answer.split(b"\r\n\r\n")[0].lower().split(b"\r\nallow: ")[1].split(b"\r\n")[0]
    assert b"get" in allow and b"trace" not in allow and b"connect" not in allow
    assert seen == []
