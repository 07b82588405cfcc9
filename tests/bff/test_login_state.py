"""The login in flight lives sealed in the browser, not in Redis (issue #10, item 3): a flood of anonymous
/bff/login requests costs Redis nothing, and the callback's binding and single use still hold."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from bff.app import create_app
from bff.login_state import MAX_PENDING
from tests.bff.conftest import PUBLIC_URL, Rig
from tests.bff.doubles import Browser

pytestmark = pytest.mark.anyio

LOGINS = 300


async def _callback(rig: Rig, start: httpx.Response) -> str:
    at_provider = await rig.provider_client.get(start.headers["location"])
    return at_provider.headers["location"].split("bff.test", 1)[1]


def _login_cookies(browser: Browser) -> dict[str, str]:
    return {k: v for k, v in browser.cookies.items() if k.startswith("__Host-bff-login-")}


async def test_a_login_flood_writes_nothing_to_redis(rig: Rig) -> None:
    redis = aioredis.Redis.from_url(rig.settings.redis_url)
    client = rig.browser().client
    await client.get("/bff/login")  # connections and discovery warmed up
    keys_before = await redis.dbsize()
    memory_before = (await redis.info("memory"))["used_memory"]
    for _ in range(LOGINS):
        start = await client.get("/bff/login", params={"return_to": "/" + "x" * 1000})
        assert start.status_code == 302
    grown = (await redis.info("memory"))["used_memory"] - memory_before
    assert await redis.dbsize() == keys_before
    assert grown < LOGINS * 100, f"{grown / LOGINS:.0f} bytes of Redis per login"  # was ~2 KB
    await redis.aclose()


async def test_anonymous_login_and_callback_pairs_write_nothing_to_redis(rig: Rig) -> None:
    """Issue #18 item 5: each anonymous /bff/login + /bff/callback pair (a bogus code, or an error answer) wrote a
    single-use marker for 10 minutes before the provider was asked. Now only a login the provider vouched for (its
    code exchanged) writes one."""
    redis = aioredis.Redis.from_url(rig.settings.redis_url)
    client = rig.browser()
    await client.request("GET", "/bff/login", csrf=False)  # connections and discovery warmed up
    keys_before = await redis.dbsize()
    memory_before = (await redis.info("memory"))["used_memory"]
    for i in range(LOGINS):
        start = await client.request("GET", "/bff/login", csrf=False)
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        answer = {"code": "bogus-code"} if i % 2 else {"error": "access_denied"}
        done = await client.request("GET", "/bff/callback", params={**answer, "state": state}, csrf=False)
        assert done.status_code == 400 and done.json()["error"] == "login_failed", done.text
    grown = (await redis.info("memory"))["used_memory"] - memory_before
    print(f"Redis after {LOGINS} anonymous login + callback pairs: {grown / LOGINS:.0f} bytes per pair")
    assert await redis.dbsize() == keys_before
    assert grown < LOGINS * 20, f"{grown / LOGINS:.0f} bytes of Redis per pair"
    await redis.aclose()


async def test_the_callback_marker_is_small_and_single_use(rig: Rig) -> None:
    browser = rig.browser()
    start = await browser.request("GET", "/bff/login", csrf=False)
    callback = await _callback(rig, start)
    kept = dict(browser.cookies)  # an attacker's copy of the login cookie
    assert (await browser.request("GET", callback, csrf=False)).status_code == 302
    redis = aioredis.Redis.from_url(rig.settings.redis_url)
    markers = [key async for key in redis.scan_iter("bff:*:used")]
    assert len(markers) == 1 and (await redis.memory_usage(markers[0]) or 0) < 150
    assert 590 <= await redis.ttl(markers[0]) <= 600
    await redis.aclose()
    replay = rig.browser()
    replay.cookies = kept
    again = await replay.request("GET", callback, csrf=False)  # the provider refuses the code a second time
    assert again.status_code == 400 and again.json()["error"] == "login_failed"
    assert "__Host-session" not in replay.cookies


async def test_a_login_completes_once_even_with_a_second_code(rig: Rig) -> None:
    """The single-use marker, now written after the exchange, still makes a login complete once: a second code for
    the same authorization request (the provider's page opened twice) is exchanged, then refused, and its refresh
    token revoked."""
    browser = rig.browser()
    start = await browser.request("GET", "/bff/login", csrf=False)
    first, second = await _callback(rig, start), await _callback(rig, start)
    kept = dict(browser.cookies)
    assert (await browser.request("GET", first, csrf=False)).status_code == 302
    revoked = len(rig.provider.revoked)
    replay = rig.browser()
    replay.cookies = kept
    again = await replay.request("GET", second, csrf=False)
    assert again.status_code == 400 and again.json()["error"] == "invalid_state"
    assert "__Host-session" not in replay.cookies and len(rig.provider.revoked) == revoked + 1


async def test_several_tabs_log_in_at_once_and_a_browser_keeps_few_login_cookies(rig: Rig) -> None:
    browser = rig.browser()
    starts = [
        await browser.request("GET", "/bff/login", params={"return_to": f"/tab{i}"}, csrf=False) for i in range(3)
    ]
    callbacks = [await _callback(rig, start) for start in starts]
    for i in (2, 0, 1):  # finished in another order than started
        done = await browser.request("GET", callbacks[i], csrf=False)
        assert done.status_code == 302 and done.headers["location"] == f"/tab{i}", done.text
    assert _login_cookies(browser) == {}
    for _ in range(3 * MAX_PENDING):
        await browser.request("GET", "/bff/login", csrf=False)
        assert len(_login_cookies(browser)) <= MAX_PENDING
    assert len(_login_cookies(browser)) == MAX_PENDING


async def test_forged_moved_and_foreign_login_cookies_are_refused(rig: Rig) -> None:
    browser = rig.browser()
    first = await _callback(rig, await browser.request("GET", "/bff/login", csrf=False))
    second = await _callback(rig, await browser.request("GET", "/bff/login", csrf=False))
    (name1, value1), (name2, value2) = _login_cookies(browser).items()
    raw = bytearray(base64.urlsafe_b64decode(value1 + "=" * (-len(value1) % 4)))
    raw[-1] ^= 1
    flipped = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for cookies in (
        {name1: flipped, name2: value2},  # tampered
        {name1: value2, name2: value2},  # the second login's cookie under the first one's name
        {name1: "A" * 400, name2: value2},  # garbage
        {name2: value2},  # absent (another browser)
    ):
        thief = rig.browser()
        thief.cookies = cookies
        refused = await thief.request("GET", first, csrf=False)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_state", cookies
    assert (await browser.request("GET", first, csrf=False)).status_code == 302
    assert (await browser.request("GET", second, csrf=False)).status_code == 302


async def test_a_login_started_on_one_replica_finishes_on_another(rig: Rig) -> None:
    browser = rig.browser()
    start = await browser.request("GET", "/bff/login", params={"return_to": "/x"}, csrf=False)
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    callback = await _callback(rig, start)
    replica = create_app(rig.settings)
    async with (
        replica.router.lifespan_context(replica),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=replica), base_url=PUBLIC_URL) as other,
    ):
        cookie = f"__Host-bff-login-{state[:12]}={browser.cookies['__Host-bff-login-' + state[:12]]}"
        done = await other.get(callback, headers={"Cookie": cookie})
    assert done.status_code == 302 and done.headers["location"] == "/x"


async def test_the_longest_return_to_fits_in_a_cookie(rig: Rig) -> None:
    start = await rig.browser().request("GET", "/bff/login", params={"return_to": "/" + "%" * 2047}, csrf=False)
    assert start.status_code == 302 and len(start.headers["set-cookie"]) < 4096


async def test_only_login_cookie_names_the_bff_could_have_set_are_expired(rig: Rig) -> None:
    odd = "__Host-bff-login-a,b c=x; __Host-bff-login-=y; __Host-bff-login-AAAAAAAAAAAA=" + "B" * 100
    start = await rig.browser().request("GET", "/bff/login", headers={"Cookie": odd}, csrf=False)
    expired = [c.split("=", 1)[0] for c in start.headers.get_list("set-cookie") if "Max-Age=0" in c]
    assert expired == ["__Host-bff-login-AAAAAAAAAAAA"]  # never an odd name echoed into a Set-Cookie


async def test_long_return_tos_keep_the_login_cookies_within_their_budget(rig: Rig) -> None:
    from bff.login_state import COOKIE_BUDGET

    browser = rig.browser()
    for i in range(2 * MAX_PENDING):
        start = await browser.request("GET", "/bff/login", params={"return_to": f"/{i}" + "%" * 2000}, csrf=False)
        assert start.status_code == 302
        kept = _login_cookies(browser)
        assert sum(len(k) + len(v) for k, v in kept.items()) <= COOKIE_BUDGET and len(kept) >= 1
    newest = await _callback(rig, start)
    assert (await browser.request("GET", newest, csrf=False)).status_code == 302  # the newest login always works
