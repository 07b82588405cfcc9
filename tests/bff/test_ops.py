"""Operations: JSON access lines (request id, no query string, no token) and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import httpx
import pytest

from bff.metrics import ACCESS
from servicekit.logs import JSONFormatter
from tests.bff.conftest import Rig
from tests.bff.doubles import Browser, Provider

pytestmark = pytest.mark.anyio


async def test_access_lines_have_route_and_request_id_but_no_code_state_or_token(rig: Rig, json_log: Any) -> None:
    lines = json_log(ACCESS, JSONFormatter())
    browser = await rig.logged_in()
    proxied = await browser.request("GET", "/api/notes/me?x=1", headers={"X-Request-ID": "trace-9"})
    assert proxied.status_code == 200
    anonymous = await rig.browser().request("GET", "/bff/user")
    assert anonymous.status_code == 401
    by_route = {line["route"]: line for line in lines}
    callback = by_route["/bff/callback"]
    assert callback["status"] == 302 and callback["path"] == "/bff/callback"
    api = by_route["/api/{route}/{path}"]
    assert (api["request_id"], api["path"], api["status"], api["method"]) == ("trace-9", "/api/notes/me", 200, "GET")
    user = by_route["/bff/user"]
    assert user["status"] == 401 and len(user["request_id"]) >= 16
    text = json.dumps(lines)
    assert "eyJ" not in text and "code=" not in text and "state" not in text
    assert not any(value in text for value in browser.cookies.values())


async def test_sigterm_lets_in_flight_requests_finish(
    rig_env: tuple[Provider, str, dict[str, str]], process_factory: Any
) -> None:
    provider, _, env = rig_env
    bff = process_factory(["-m", "bff", "serve"], env)
    async with httpx.AsyncClient(base_url=bff.url, timeout=10) as client, httpx.AsyncClient() as provider_client:
        browser = Browser(client)
        assert (await browser.login(provider_client)).status_code == 302
        in_flight = asyncio.create_task(browser.request("GET", "/api/notes/slow?s=1.5"))
        await asyncio.sleep(0.5)
        bff.proc.send_signal(signal.SIGTERM)
        response = await in_flight
        assert response.status_code == 200, response.text
        # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit status says "terminated"
        assert await asyncio.to_thread(bff.proc.wait, 10) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            await client.get("/healthz")


async def test_a_forward_auth_line_names_the_original_request(
    rig_env: tuple[Provider, str, dict[str, str]], json_log: Any
) -> None:
    from tests.bff.conftest import running

    provider, upstream, env = rig_env
    lines = json_log(ACCESS, JSONFormatter())
    async with running(provider, upstream, {**env, "BFF_TRUSTED_PROXIES": "127.0.0.1/32"}) as rig:
        browser = await rig.logged_in()
        answer = await browser.request(
            "GET",
            "/bff/auth",
            csrf=False,
            headers={"X-Original-URI": "/api/notes/me?code=SECRET", "X-Original-Method": "DELETE", "X-CSRF": "1"},
        )
        assert answer.status_code == 200, answer.text
    (line,) = [line for line in lines if line["route"] == "/bff/auth"]
    assert (line["original_method"], line["original_uri"]) == ("DELETE", "/api/notes/me")
    assert "SECRET" not in json.dumps(lines)


async def test_an_upstream_failure_is_a_warning_with_the_request_ids(
    rig_env: tuple[Provider, str, dict[str, str]], json_log: Any
) -> None:
    import logging

    from tests.bff.conftest import running
    from tests.conftest import free_port

    provider, upstream, env = rig_env
    dead = f"http://127.0.0.1:{free_port()}"
    lines = json_log(logging.getLogger("bff.proxy"), JSONFormatter())
    routes = json.dumps({"notes": upstream, "gone": dead})
    async with running(provider, upstream, {**env, "BFF_ROUTES": routes}) as rig:
        browser = await rig.logged_in()
        trace = "0af7651916cd43dd8448eb211c80319c"
        response = await browser.request(
            "GET",
            "/api/gone/x?token=SECRET",
            headers={"X-Request-ID": "req-gone", "traceparent": f"00-{trace}-b7ad6b7169203331-01"},
        )
        assert response.status_code == 502
    (line,) = [line for line in lines if line["level"] == "warning"]
    assert (line["route"], line["upstream"], line["request_id"], line["trace_id"]) == ("gone", dead, "req-gone", trace)
    assert line["cause"].startswith("refused") and "SECRET" not in json.dumps(line)


async def test_a_forward_auth_line_on_a_real_socket_names_the_original_request(
    rig_env: tuple[Provider, str, dict[str, str]], process_factory: Any
) -> None:
    """`bff serve` answers /bff/auth past the ASGI app (servicekit.http raw routes): its access line still names the
    original request, and carries the request and trace ids."""
    provider, _, env = rig_env
    bff = process_factory(["-m", "bff", "serve", "--access-log"], {**env, "BFF_TRUSTED_PROXIES": "127.0.0.1/32"})
    async with httpx.AsyncClient(base_url=bff.url, timeout=10) as client, httpx.AsyncClient() as provider_client:
        browser = Browser(client)
        assert (await browser.login(provider_client)).status_code == 302
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        answer = await browser.request(
            "GET",
            "/bff/auth",
            csrf=False,
            headers={
                "X-Original-URI": "/api/notes/me?code=SECRET",
                "X-Original-Method": "GET",
                "X-Request-ID": "fa-1",
                "X-CSRF": "1",
                "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
                "X-Forwarded-For": "10.9.9.9, 203.0.113.9",  # the edge (a trusted peer) names 203.0.113.9
            },
        )
        assert answer.status_code == 200, answer.text
    async with httpx.AsyncClient(base_url=bff.url, timeout=10) as stranger:
        # a refusal (no session), which the raw route hands to the app to answer: one request all the same, its line
        # names the request asked about, and its ids are the ones the lines written while deciding it carry
        asked = {"X-Original-URI": "/api/notes/me?code=SECRET", "X-Original-Method": "DELETE", "X-Request-ID": "fa-2"}
        refused = await stranger.get("/bff/auth", headers=asked)
        assert refused.status_code == 403, refused.text  # a DELETE without X-CSRF
        anonymous = await stranger.get("/bff/auth", headers={**asked, "X-Request-ID": ""})  # none: the BFF's own
        assert anonymous.status_code == 403 and anonymous.headers["x-request-id"], anonymous.headers
    for _ in range(50):
        if "fa-1" in bff.output() and "fa-2" in bff.output():
            break
        await asyncio.sleep(0.1)
    lines = [json.loads(line) for line in bff.output().splitlines() if line.startswith("{")]
    (line,) = [line for line in lines if line.get("request_id") == "fa-1"]
    assert (line["route"], line["status"], line["original_method"], line["original_uri"]) == (
        "/bff/auth",
        200,
        "GET",
        "/api/notes/me",
    )
    assert line["trace_id"] == trace and "SECRET" not in bff.output()
    (line2,) = [line for line in lines if line.get("request_id") == "fa-2"]
    assert (line2["status"], line2["original_method"], line2["original_uri"]) == (403, "DELETE", "/api/notes/me")
    (line3,) = [line for line in lines if line.get("request_id") == anonymous.headers["x-request-id"]]
    assert line3["status"] == 403 and line3["original_uri"] == "/api/notes/me", line3
    assert (line["client"], line["forwarded_for"]) == ("127.0.0.1", "203.0.113.9")  # the peer, and whom it names
    lines = [line for line in lines if line.get("route") == "/bff/callback"]
    assert lines and "forwarded_for" not in lines[0]  # a request the peer made for itself: its address alone
