"""RFC 9126 and RFC 9207 between the BFF and the real auth server: the browser carries only client_id and
request_uri, a request_uri works once, and the callback's iss must be our provider's."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from tests.auth_server.helpers import form_of
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio


async def test_the_authorization_redirect_carries_only_client_id_and_request_uri(stack_factory: Any) -> None:
    stack: Stack = stack_factory()
    browser = stack.browser()
    start = await browser.request("GET", "/bff/login", params={"return_to": "/#x"}, csrf=False)
    assert start.status_code == 302
    location = start.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert set(query) == {"client_id", "request_uri"} and query["client_id"] == ["bff"]
    assert query["request_uri"][0].startswith("urn:ietf:params:oauth:request_uri:")
    async with httpx.AsyncClient(timeout=10) as idp:
        page = await idp.get(location)
        assert page.status_code == 200 and form_of(page.text).fields["redirect_uri"] == stack.bff_url + "/bff/callback"
        again = await idp.get(location)
        assert again.status_code == 400 and "location" not in again.headers  # a request_uri works once
    # the whole login goes through PAR, and the callback's iss is checked and accepted
    callback = await stack.login(browser, return_to="/#notes")
    assert callback.status_code == 302 and callback.headers["location"] == "/#notes"
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200


@pytest.mark.parametrize("iss", ["http://evil.example", None], ids=["another-issuer", "no-iss"])
async def test_a_callback_from_another_issuer_is_refused(stack_factory: Any, iss: str | None) -> None:
    stack: Stack = stack_factory()
    browser = stack.browser()
    start = await browser.request("GET", "/bff/login", csrf=False)
    async with httpx.AsyncClient(timeout=10) as idp:
        state = form_of((await idp.get(start.headers["location"])).text).fields["state"]
    params = {"code": "a-code-from-elsewhere", "state": state, **({"iss": iss} if iss else {})}
    callback = await browser.request("GET", "/bff/callback", params=params, csrf=False)
    assert callback.status_code == 400 and callback.json()["error"] == "login_failed", callback.text
    assert callback.json()["error_description"] in (  # refused for its iss, before the code was even tried
        "The authorization response comes from another issuer.",
        "The authorization response has no iss.",
    )
    assert stack.gate.refreshes == 0 and "__Host-session" not in browser.cookies


FLOOD = 200


async def _redis_bytes(redis: aioredis.Redis) -> int:
    """What the keys in Redis take, summed (``used_memory`` also counts allocator noise and client buffers)."""
    return sum([await redis.memory_usage(key) or 0 async for key in redis.scan_iter(count=1000)])


async def test_a_login_flood_through_par_barely_grows_the_shared_redis(stack_factory: Any) -> None:
    """Issue #10 item 3 with PAR on: the BFF pushes each anonymous /bff/login to the auth server, and both share one
    Redis (as in compose). Pushing stores nothing; a browser that follows the redirect leaves a marker of a few dozen
    bytes for at most a minute."""
    stack: Stack = stack_factory()
    redis = aioredis.Redis.from_url(stack.redis_url)
    client = stack.browser().client
    async with httpx.AsyncClient(timeout=10) as idp:
        await idp.get((await client.get("/bff/login")).headers["location"])  # warmed up, one marker
        keys_before, bytes_before = await redis.dbsize(), await _redis_bytes(redis)
        memory_before = (await redis.info("memory"))["used_memory"]
        for _ in range(FLOOD):
            start = await client.get("/bff/login", params={"return_to": "/" + "x" * 1000})
            assert start.status_code == 302 and "request_uri=" in start.headers["location"]
        pushed = await _redis_bytes(redis) - bytes_before
        assert await redis.dbsize() == keys_before, "a pushed request was stored"
        assert pushed == 0
        for _ in range(FLOOD):  # the attacker follows each redirect too: one marker per redemption
            start = await client.get("/bff/login")
            assert (await idp.get(start.headers["location"])).status_code == 200
        redeemed = await _redis_bytes(redis) - bytes_before
        grown = (await redis.info("memory"))["used_memory"] - memory_before
        assert await redis.dbsize() == keys_before + FLOOD  # the markers, and nothing else
    await redis.aclose()
    assert redeemed < FLOOD * 150, f"{redeemed / FLOOD:.0f} bytes of keys per redeemed login"
    assert grown < 2 * FLOOD * 300, f"{grown / (2 * FLOOD):.0f} bytes of Redis per attempt"
