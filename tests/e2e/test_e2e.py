"""DESIGN §3 end to end: auth server, resource server and BFF on real sockets, a real Redis."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest
import redis

from tests.bff.doubles import Browser
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio

SESSION_COOKIE = re.compile(r"^__Host-session=([A-Za-z0-9_-]{43}); Path=/; Secure; HttpOnly; SameSite=Lax$")


async def test_login_user_api_logout(stack_factory: Any) -> None:
    stack: Stack = stack_factory()
    browser = stack.browser()
    callback = await stack.login(browser, "alice", return_to="/#notes")
    assert callback.status_code == 302 and callback.headers["location"] == "/#notes"
    cookies = callback.headers.get_list("set-cookie")
    match = SESSION_COOKIE.fullmatch(cookies[0])
    assert match, cookies[0]

    user = await browser.request("GET", "/bff/user")
    assert user.status_code == 200
    body = user.json()
    assert body["username"] == "alice" and body["sub"] and "notes:read" in body["scope"]
    assert time.time() < body["idle_expires_at"] <= body["expires_at"]

    me = await browser.request("GET", "/api/notes/me")
    assert me.status_code == 200, me.text
    assert me.json()["sub"] == body["sub"] and me.json()["client_id"] == "bff"
    created = await browser.request("POST", "/api/notes/notes", json={"text": "through the BFF"})
    assert created.status_code == 201, created.text
    listed = await browser.request("GET", "/api/notes/notes")
    assert "through the BFF" in listed.text
    deleted = await browser.request("DELETE", f"/api/notes/notes/{created.json()['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert "through the BFF" not in (await browser.request("GET", "/api/notes/notes")).text

    logout = await browser.request("POST", "/bff/logout")
    assert logout.status_code == 200
    assert logout.headers["cache-control"] == "no-store" and logout.headers["clear-site-data"] == '"cookies"'
    assert logout.headers["set-cookie"].startswith("__Host-session=; Path=/; Max-Age=0")
    for path in ("/bff/user", "/api/notes/me"):
        after = await browser.request("GET", path, headers={"Cookie": f"__Host-session={match.group(1)}"})
        assert after.status_code == 401 and after.json()["error"] == "login_required"
    assert browser.leaked() == []

    # Redis holds no token and no cookie value in clear, under any service's prefix
    r = redis.Redis.from_url(stack.redis_url)
    for key in r.scan_iter("*"):
        blob = r.dump(key) or b""
        assert b"eyJ" not in blob and match.group(1).encode() not in blob + key, key
    r.close()


async def _refresh_storm(stack: Stack, urls: list[str], browser: Browser, n: int = 48) -> list[int]:
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(
            *(
                client.get(urls[i % len(urls)] + "/api/notes/me", headers={"Cookie": cookie, "X-CSRF": "1"})
                for i in range(n)
            )
        )
    return [r.status_code for r in responses]


@pytest.mark.parametrize("slow", [False, True], ids=["fast-auth", "auth-slower-than-the-lease"])
async def test_refresh_across_two_bff_processes(stack_factory: Any, process_factory: Any, slow: bool) -> None:
    stack: Stack = stack_factory(access_ttl=2, bff_thread=False, BFF_REFRESH_SKEW="0", BFF_LOCK_LEASE="1")
    port = int(stack.bff_url.rsplit(":", 1)[1])
    first = process_factory(["-m", "bff", "serve"], stack.bff_env, port=port)
    second = process_factory(["-m", "bff", "serve"], stack.bff_env)
    browser = stack.browser()
    assert (await stack.login(browser)).status_code == 302
    await asyncio.sleep(2.1)  # the access token has expired
    if slow:
        stack.gate.delay = 2.5  # 2.5 leases: only renewal keeps the second process waiting
    statuses = await _refresh_storm(stack, [first.url, second.url], browser)
    assert statuses == [200] * 48
    assert stack.gate.refreshes == 1
    stack.gate.delay = 0
    # the login survived (reuse detection would have revoked it): the next expiry refreshes again
    await asyncio.sleep(2.1)
    assert await _refresh_storm(stack, [second.url, first.url], browser, 8) == [200] * 8
    assert stack.gate.refreshes == 2
    assert (await browser.request("GET", "/bff/user")).status_code == 200


async def test_redis_restart_keeps_sessions(stack_factory: Any, redis_factory: Any) -> None:
    server = redis_factory()
    stack: Stack = stack_factory(redis=server.url)
    browser = stack.browser()
    await stack.login(browser)
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200
    server.stop()
    response = await browser.request("GET", "/api/notes/me")
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    assert (await browser.request("GET", "/bff/user")).status_code == 503
    server.start()
    assert (await browser.request("GET", "/bff/user")).status_code == 200
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200


async def test_auth_server_outage(stack_factory: Any) -> None:
    stack: Stack = stack_factory(access_ttl=3, BFF_REFRESH_SKEW="0", BFF_AUTH_TIMEOUT="2")
    browser = stack.browser()
    await stack.login(browser)
    logged_in_at = time.monotonic()
    stack.auth_server.stop()
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200  # the access token is still good
    await asyncio.sleep(max(0.0, 3.1 - (time.monotonic() - logged_in_at)))
    down = await browser.request("GET", "/api/notes/me")
    assert down.status_code == 503 and down.json()["error"] == "temporarily_unavailable"
    stack.restart_auth()
    back = await browser.request("GET", "/api/notes/me")
    assert back.status_code == 200, back.text  # no re-login
    assert stack.gate.refreshes == 1


async def test_attacks_over_real_sockets(stack_factory: Any) -> None:
    stack: Stack = stack_factory()
    victim = stack.browser()
    planted = "A" * 43
    victim.cookies["__Host-session"] = planted
    await stack.login(victim)
    assert victim.cookies["__Host-session"] != planted  # fixation: a new id at login

    for cookie in ("garbage", "A" * 43, "x" * 6000, "%00", "eyJhbGciOiJub25lIn0.e30."):
        for path in ("/bff/user", "/api/notes/me"):
            r = await stack.browser().request("GET", path, headers={"Cookie": f"__Host-session={cookie}"})
            assert r.status_code == 401 and r.json()["error"] == "login_required", (cookie[:10], path)
    huge = await stack.browser().request("GET", "/bff/user", headers={"Cookie": "__Host-session=" + "A" * 70_000})
    assert huge.status_code in (400, 401, 431)

    for return_to in ("https://evil.example", "//evil.example", "/\\evil.example"):
        r = await stack.browser().request("GET", "/bff/login", params={"return_to": return_to}, csrf=False)
        assert r.status_code == 400 and "location" not in r.headers

    assert (await victim.request("GET", "/api/notes/me", csrf=False)).status_code == 403
    foreign = await victim.request(
        "POST", "/api/notes/notes", json={"text": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and foreign.json()["error"] == "csrf"
    assert (await victim.request("GET", "/bff/callback?code=x&state=" + "B" * 43, csrf=False)).status_code == 400
    assert (await victim.request("GET", "/api/notes/me")).status_code == 200  # none of that hurt the session
