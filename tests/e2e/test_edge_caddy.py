"""Caddy at the edge: Debian's caddy with deploy/caddy/Caddyfile (forward_auth) in front of the BFF (`bff serve`, a
process), the auth server, the resource server and a header mirror, all on loopback sockets — the same promises as
tests/e2e/test_edge.py makes for nginx."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.e2e.test_edge import BROWSERS_TRACEPARENT, assert_in_the_browsers_trace_under_the_bffs_answer, chat_upstream
from tests.processes import terminate

pytestmark = pytest.mark.anyio

CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"


@contextlib.contextmanager
def caddy(port: int, env: dict[str, str], home: Path) -> Iterator[None]:
    binary = shutil.which("caddy")
    if binary is None:
        pytest.fail("caddy is missing: apt-get install caddy (scripts/test does)")  # a failure, never a skip
    run_env = {**os.environ, **env, "EDGE_PORT": str(port), "XDG_CONFIG_HOME": str(home), "XDG_DATA_HOME": str(home)}
    command = [binary, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
    log = (home / "caddy.log").open("wb")
    proc = subprocess.Popen(command, env=run_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"caddy did not start:\n{(home / 'caddy.log').read_text()}") from None
                time.sleep(0.05)
        yield
    finally:
        terminate(proc)
        log.close()


@pytest.fixture
async def caddy_stack(stack_factory: Any, process_factory: Any, tmp_path: Path) -> AsyncIterator[Any]:
    # Caddy takes the port the stack gave "the BFF" (the auth server's redirect URI points at it); the BFF process
    # listens behind it. The `live` route's upstream is a header mirror, to see what an upstream receives.
    stack = stack_factory(bff_thread=False, BFF_TRUSTED_PROXIES="127.0.0.1/32")
    seen: list[dict[str, str]] = []
    runner, mirror_port = await chat_upstream(seen)
    stack.bff_env["BFF_ROUTES"] = json.dumps(
        {"notes": stack.rs_url, "live": {"url": f"http://127.0.0.1:{mirror_port}", "methods": ["GET", "POST"]}}
    )
    edge_port = int(stack.bff_url.rsplit(":", 1)[1])
    bff = process_factory(["-m", "bff", "serve"], stack.bff_env, health_path="/readyz")
    env = {
        "BFF_ADDR": f"127.0.0.1:{bff.port}",
        "NOTES_ADDR": stack.rs_url.removeprefix("http://"),
        "LIVE_ADDR": f"127.0.0.1:{mirror_port}",
    }
    try:
        with caddy(edge_port, env, tmp_path):
            yield stack, f"http://127.0.0.1:{edge_port}", seen, env["LIVE_ADDR"]
    finally:
        await runner.cleanup()


async def test_the_notes_api_through_caddy(caddy_stack: Any) -> None:
    stack, url, seen, mirror = caddy_stack
    browser = stack.browser(url)
    callback = await stack.login(browser, "alice")  # /bff/login and /bff/callback through Caddy
    assert callback.status_code == 302 and browser.cookies, callback.text

    me = await browser.request("GET", "/api/notes/me")
    assert me.status_code == 200, me.text
    assert me.json()["client_id"] == "bff" and "Caddy" in me.headers["server"]  # Caddy, not the BFF, moved it
    created = await browser.request("POST", "/api/notes/notes", json={"text": "through caddy"})
    assert created.status_code == 201, created.text  # the body reached the upstream (forward_auth did not eat it)
    assert "through caddy" in (await browser.request("GET", "/api/notes/notes")).text

    # What an upstream gets: the BFF's token, no cookie, no CSRF header; what it sets never reaches the browser.
    forged = {
        "X-Auth-Request-User": "mallory",
        "X-Auth-Request-Email": "m@evil.example",
        "X-Auth-Request-Groups": "admin",
    }
    mirrored = await browser.request(
        "GET",
        "/api/live/headers",
        headers={
            "Authorization": "Bearer forged",
            "X-HTTP-Method-Override": "DELETE",
            "X-Request-ID": "the-browsers-own",  # a sane id: the BFF takes it for its lines, and so the upstream
            "traceparent": BROWSERS_TRACEPARENT,
            "X_Auth_Request_Sub": "mallory",  # what a CGI-style upstream reads as X-Auth-Request-Sub
            "x_forwarded_for": "203.0.113.66",
            **forged,
        },
    )
    assert mirrored.status_code == 200 and "set-cookie" not in mirrored.headers, mirrored.text
    upstream_saw = {k.lower(): v for k, v in seen[-1].items()}
    assert upstream_saw["authorization"].startswith("Bearer eyJ") and upstream_saw["x-auth-request-sub"]
    assert "cookie" not in upstream_saw and "x-csrf" not in upstream_saw
    assert "x-http-method-override" not in upstream_saw
    assert "x-forwarded-host" not in upstream_saw  # Caddy made one of the browser's Host (as nginx and the BFF: none)
    assert not [name for name in upstream_saw if "_" in name], upstream_saw  # as nginx: underscores_in_headers off
    # The BFF's answer's request id and trace reach the upstream (its log lines join the BFF's), the parent its span
    assert upstream_saw["x-request-id"] == "the-browsers-own"
    assert_in_the_browsers_trace_under_the_bffs_answer(upstream_saw)
    # Who the user is comes from the BFF alone: the browser's own copies never pass (DESIGN §11). Alice has no email
    # or groups at our auth server; Debian's Caddy 2.6 then sends its unresolved placeholder text in their place
    # (docs/guides/edge-caddy.md), never the forged values.
    assert upstream_saw["x-auth-request-user"] == "alice"
    for name in ("x-auth-request-email", "x-auth-request-groups"):
        value = upstream_saw.get(name, "")
        assert value == "" or value.startswith("{http.reverse_proxy.header."), value  # never the browser's
    assert upstream_saw["host"] == mirror  # as in BFF_ROUTES, as the BFF's own proxy sends it (DPoP's htu)

    # Refusals are the BFF's JSON errors, never a redirect and never a token.
    anonymous = await stack.browser(url).request("GET", "/api/notes/me")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "login_required"
    no_csrf = await browser.request("GET", "/api/notes/me", csrf=False)
    assert no_csrf.status_code == 403 and no_csrf.json()["error"] == "csrf"
    foreign = await browser.request(
        "POST", "/api/notes/notes", json={"text": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and foreign.json()["error"] == "csrf"
    refused = await browser.request("DELETE", "/api/live/headers")
    assert refused.status_code == 405 and refused.json()["error"] == "method_not_allowed"
    calls = len(seen)
    steer = await browser.request("GET", "/api/notes/me", headers={"X-Original-URI": "/api/live/headers"})
    assert steer.status_code == 200 and steer.json()["client_id"] == "bff" and len(seen) == calls
    unknown = await browser.request("GET", "/api/nope/x")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"

    # /bff/auth is Caddy's alone: from outside it does not exist, whatever is forged.
    for path in ("/bff/auth", "/bff/%61uth", "/bff/auth/api/notes/me"):
        direct = await browser.request("GET", path, headers={"X-Original-URI": "/api/notes/me"})
        assert direct.status_code == 404 and "authorization" not in direct.headers, path

    stolen = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    logout = await browser.request("POST", "/bff/logout")
    assert logout.status_code == 200
    after = await stack.browser(url).request("GET", "/api/notes/me", headers={"Cookie": stolen})
    assert after.status_code == 401 and after.json()["error"] == "login_required"
    assert browser.leaked() == []  # no token ever reached the browser: not in a body, not in a header


async def test_no_upgrade_but_a_websocket_reaches_an_upstream_through_caddy(caddy_stack: Any) -> None:
    """As through nginx (tests/e2e/test_edge.py): the BFF refuses an h2c upgrade, so Caddy never passes one on."""
    stack, url, seen, _ = caddy_stack
    browser = stack.browser(url)
    await stack.login(browser, "uri")
    before = len(seen)
    h2c = await browser.request("GET", "/api/live/headers", headers={"Upgrade": "h2c", "Connection": "Upgrade"})
    assert h2c.status_code == 400 and h2c.json()["error"] == "invalid_request", h2c.text
    assert len(seen) == before
