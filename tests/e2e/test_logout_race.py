"""Once /bff/logout has answered, the cookie is dead everywhere, whatever refresh was in flight (issue #10, item 1).

The auth server rotates the family at once and answers 3 s later: the refresh lands after the logout deleted the
session. Before the conditional save (SET XX, bff/sessions.py) it wrote the session back and the old cookie worked
again; now the save is refused and the refresh token it got is revoked."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio


async def _until(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (the counters live in the server thread)
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("auth_timeout", ["10", "1"], ids=["refresh-awaited", "late-refresh"])
async def test_logout_during_a_slow_refresh_stays_logged_out(stack_factory: Any, auth_timeout: str) -> None:
    stack: Stack = stack_factory(access_ttl=1, BFF_REFRESH_SKEW="0", BFF_AUTH_TIMEOUT=auth_timeout)
    browser = stack.browser()
    await stack.login(browser)
    old_cookie = {"Cookie": f"__Host-session={browser.cookies['__Host-session']}"}
    await asyncio.sleep(1.1)  # the access token has expired: the next API call refreshes
    stack.gate.answer_delay = 3.0
    pending = asyncio.ensure_future(browser.request("GET", "/api/notes/me"))
    await _until(lambda: stack.gate.refreshes == 1)  # the family is rotated; the answer is on its way

    logout = await browser.request("POST", "/bff/logout")
    assert logout.status_code == 200
    assert (await browser.request("GET", "/bff/user", headers=old_cookie)).status_code == 401

    during = await pending  # the refresh the request waited for (401), or a 503 and a refresh that lands later
    assert during.status_code == (401 if auth_timeout == "10" else 503), during.text
    await _until(lambda: stack.gate.answered == 1)
    deadline = time.monotonic() + 5
    while stack.gate.revocations < 2:  # the logout's, then the discarded refresh token's
        resurrected = await browser.request("GET", "/bff/user", headers=old_cookie)
        assert resurrected.status_code == 401, "the refresh wrote the session back after the logout"
        assert time.monotonic() < deadline, "the discarded refresh token was not revoked"
        await asyncio.sleep(0.05)
    for path in ("/bff/user", "/api/notes/me"):
        after = await browser.request("GET", path, headers=old_cookie)
        assert after.status_code == 401 and after.json()["error"] == "login_required", (path, after.text)
    assert list(redis.Redis.from_url(stack.redis_url).scan_iter("bff:*:s")) == []
