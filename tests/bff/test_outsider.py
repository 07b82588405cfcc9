"""Found attacking the whole stack on loopback as an outsider: each case failed (a 500, or worse) before its fix."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bff.stack import StackPorts, stack_environment
from tests.bff.conftest import Rig, running
from tests.bff.doubles import Browser, Provider
from tests.vanishing_client import assert_quiet, http_scope, post_and_vanish

pytestmark = pytest.mark.anyio


def _with_header(token: str, header: object) -> str:
    """``token`` with its JOSE header replaced by ``header`` (the signature no longer matches, which is the point:
    the header must be refused before anything is verified)."""
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return encoded + token[token.index(".") :]


@pytest.mark.parametrize("alg", [["RS256"], {"RS256": True}, 256, None], ids=["list", "object", "number", "null"])
async def test_a_logout_token_whose_alg_is_not_a_string_is_400_not_500(rig: Rig, alg: object) -> None:
    browser = await rig.logged_in()
    sid = list(rig.provider.families)[-1]
    token = _with_header(rig.provider.logout_token(sid=sid), {"alg": alg, "kid": "k1", "typ": "logout+jwt"})
    response = await rig.browser().request("POST", "/bff/backchannel", csrf=False, data={"logout_token": token})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert (await browser.request("GET", "/bff/user")).status_code == 200  # nothing ended


async def test_the_browsers_own_dpop_header_never_reaches_the_upstream(rig: Rig) -> None:
    # The BFF owns the credential headers: a browser's DPoP proof beside the BFF's (or beside a bearer token) is
    # refused by a DPoP resource server ("one proof"), or worse, read by a lax one.
    browser = await rig.logged_in()
    response = await browser.request("GET", "/api/notes/x", headers={"DPoP": "eyJ.browser.proof"})
    assert response.status_code == 200, response.text
    sent = response.json()["headers"]
    assert "dpop" not in sent and sent["authorization"] == "Bearer <valid, redacted>"


@pytest.mark.bff_env(BFF_TRUSTED_PROXIES="127.0.0.1/32")  # the in-process client's address plays the proxy
@pytest.mark.parametrize("uri", ["/%61pi/notes/me", "/ap%69/notes/me", "/%61%70%69/notes/me", "/api%2Fnotes/me"])
async def test_forward_auth_judges_csrf_on_the_route_however_the_api_prefix_is_spelled(rig: Rig, uri: str) -> None:
    # nginx matches `location /api/notes/` on the decoded URI, so a top-level navigation to /%61pi/notes/me reaches
    # the upstream: the BFF's answer must still demand X-CSRF, as for /api/notes/me.
    browser = await rig.logged_in()
    for method in ("GET", "POST"):
        response = await browser.request(
            "GET", "/bff/auth", csrf=False, headers={"X-Original-URI": uri, "X-Original-Method": method}
        )
        assert response.status_code in (403, 404), (method, response.status_code)
        assert response.json()["error"] != "forbidden"  # refused by the CSRF rule, not for the peer
        assert "authorization" not in response.headers
    allowed = await browser.request(
        "GET", "/bff/auth", csrf=False, headers={"X-Original-URI": uri, "X-Original-Method": "GET", "X-CSRF": "1"}
    )
    assert allowed.status_code in (200, 404)  # with the header, as /api/notes/me (or not a route at all)


async def test_a_browser_gone_mid_body_is_no_server_error(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    browser = await rig.logged_in()
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items()).encode()
    headers = [(b"cookie", cookie), (b"x-csrf", b"1"), (b"content-type", b"text/plain")]
    with caplog.at_level(logging.INFO):
        assert await post_and_vanish(rig.app, "/api/notes/notes", headers) == 499
        assert await post_and_vanish(
            rig.app, "/bff/backchannel", [(b"content-type", b"application/x-www-form-urlencoded")]
        ) in (400, 499)
    assert_quiet(caplog)
    assert (await browser.request("GET", "/api/notes/x")).status_code == 200  # the session is untouched


async def test_a_refused_websocket_handshake_logs_no_error(
    rig_env: tuple[Provider, str, dict[str, str]], process_factory: Any
) -> None:
    # `bff serve` as shipped: uvicorn's sans-I/O WebSocket protocol logged an ERROR line for every handshake the BFF
    # refused (a foreign Origin: anyone can send one), though the refusal went out as it should.
    _, upstream, env = rig_env
    env = {**env, "BFF_ROUTES": json.dumps({"notes": {"url": upstream, "websocket": True}})}
    bff = process_factory(["-m", "bff", "serve"], env, health_path="/healthz")
    for origin in ("https://evil.example", None):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(bff.url.replace("http", "ws") + "/api/notes/ws", origin=origin):
                pass
        assert refused.value.response.status_code == 403
    await asyncio.sleep(0.3)  # the log line, if any, follows the answer
    errors = [line for line in bff.output().splitlines() if '"level": "error"' in line or "ERROR" in line]
    assert errors == []


def _ticking_stream() -> Starlette:
    """An upstream event stream that never ends by itself."""

    async def events(request: Request) -> StreamingResponse:
        async def ticks() -> AsyncIterator[bytes]:
            n = 0
            while True:
                n += 1
                yield f"data: {n}\n\n".encode()
                await asyncio.sleep(0.05)

        return StreamingResponse(ticks(), media_type="text/event-stream")

    return Starlette(routes=[Route("/events", events)])


async def test_an_event_stream_stops_when_its_session_ends(
    rig_env: tuple[Provider, str, dict[str, str]], server_factory: Any
) -> None:
    # A WebSocket closes on logout (DESIGN §7); an event stream opened before the logout went on speaking for the
    # user who had logged out, for as long as the upstream kept sending.
    provider, upstream, env = rig_env
    stream = server_factory(_ticking_stream())
    env = {**env, "BFF_ROUTES": json.dumps({"notes": upstream, "live": stream.url})}
    async with running(provider, upstream, env) as rig:
        browser = await rig.logged_in()
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items()).encode()
        chunks: list[bytes] = []
        finished, flowing = asyncio.Event(), asyncio.Event()
        scope = http_scope("GET", "/api/live/events", [(b"host", b"bff.test"), (b"cookie", cookie), (b"x-csrf", b"1")])

        async def receive() -> dict[str, Any]:
            await finished.wait()  # the browser stays until the stream ends
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if len(chunks) >= 3:
                    flowing.set()
                if not message.get("more_body", False):
                    finished.set()

        task = asyncio.create_task(rig.app(scope, receive, send))
        try:
            await asyncio.wait_for(flowing.wait(), 3)
            assert b"data: 1" in b"".join(chunks)
            assert (await browser.request("POST", "/bff/logout")).status_code == 200
            await asyncio.wait_for(finished.wait(), 3)  # within the watch interval, not when the upstream stops
        finally:
            finished.set()
            task.cancel()
        assert chunks[-1] == b""  # a clean end: an EventSource reconnects, and is refused
        again = await browser.request("GET", "/api/live/events")
        assert again.status_code == 401


async def test_bff_stack_answers_no_forward_auth_question_from_a_loopback_browser(
    rig_env: tuple[Provider, str, dict[str, str]],
) -> None:
    # `bff stack` has no proxy in front, and its browsers connect over loopback: were loopback trusted, a page's
    # script could ask /bff/auth and read the access token in the answer's Authorization header. It says so itself
    # (not only through the default), so a changed default cannot reopen it.
    provider, upstream, env = rig_env
    assert stack_environment(StackPorts(), {})["BFF_TRUSTED_PROXIES"] == "none"
    async with running(provider, upstream, {**env, "BFF_TRUSTED_PROXIES": "none"}) as rig:
        browser = await rig.logged_in()  # the in-process browser connects from 127.0.0.1
        asked = await browser.request("GET", "/bff/auth", headers={"X-Original-URI": "/api/notes/me"})
        assert asked.status_code == 403 and "authorization" not in asked.headers
        assert (await browser.request("GET", "/api/notes/me")).status_code == 200  # the BFF's own proxy still works


async def test_by_default_forward_auth_trusts_no_peer_not_even_loopback(
    rig_env: tuple[Provider, str, dict[str, str]],
) -> None:
    # A generic reverse proxy on the same host (nginx, Caddy, Apache) forwarding every path to localhost:8000 makes a
    # browser's own /bff/auth call arrive from loopback with the page's cookie, X-CSRF and a forged X-Original-URI:
    # a loopback default answered 200 with the access token in Authorization, readable by any script on the page.
    provider, upstream, env = rig_env
    assert "BFF_TRUSTED_PROXIES" not in env  # the defaults, as `bff serve` starts with them
    async with running(provider, upstream, env) as rig:
        assert rig.settings.trusted_proxies == ()
        browser = await rig.logged_in()  # the in-process browser connects from 127.0.0.1
        for client in ("127.0.0.1", "::1"):
            transport = httpx.ASGITransport(app=rig.app, client=(client, 4711))
            page = Browser(httpx.AsyncClient(transport=transport, base_url=rig.settings.public_url))
            page.cookies = dict(browser.cookies)
            try:
                for method, url, headers in (
                    ("GET", "/bff/auth", {"X-Original-URI": "/api/notes/x", "Origin": rig.settings.public_url}),
                    ("GET", "/bff/auth", {"X-Forwarded-Uri": "/api/notes/x", "X-Forwarded-Method": "GET"}),
                    ("POST", "/bff/auth/api/notes/x", {}),  # Envoy's path_prefix form
                ):
                    answer = await page.request(method, url, headers=headers)  # X-CSRF: 1 added
                    assert answer.status_code == 403, (client, url, answer.text)
                    assert answer.json()["error"] == "forbidden"
                    assert "BFF_TRUSTED_PROXIES" in answer.json()["error_description"]  # says how to turn it on
                    assert "authorization" not in answer.headers and "dpop" not in answer.headers
                assert page.leaked() == []
            finally:
                await page.client.aclose()
        assert (await browser.request("GET", "/api/notes/me")).status_code == 200  # the BFF's own proxy still works


async def test_an_upstream_cannot_clear_the_bffs_cookies(
    rig_env: tuple[Provider, str, dict[str, str]], server_factory: Any
) -> None:
    async def clearing(request: Request) -> Response:
        return Response("{}", headers={"Clear-Site-Data": '"cookies", "storage"', "Set-Cookie": "x=1"})

    provider, upstream, env = rig_env
    evil = server_factory(Starlette(routes=[Route("/clear", clearing)]))
    env = {**env, "BFF_ROUTES": json.dumps({"notes": upstream, "evil": evil.url})}
    async with running(provider, upstream, env) as rig:
        browser = await rig.logged_in()
        response = await browser.request("GET", "/api/evil/clear")
        assert response.status_code == 200
        assert "clear-site-data" not in response.headers and "set-cookie" not in response.headers
