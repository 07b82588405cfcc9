"""Step-up at the BFF (RFC 9470, DESIGN §14): an upstream's insufficient_user_authentication challenge, or a route's
acr/max_age, gets the browser a 401 with a step_up_url and no retry; a login through it asks the provider for the
level, checks the acr and auth_time it gets back, and upgrades the same session (same cookie) — and a logout that
wins the race stays a logout."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio as aioredis

from bff.app import create_app
from bff.routes import parse_routes
from servicekit.settings import SettingsError
from tests.bff.conftest import Rig, running
from tests.bff.doubles import Browser, Provider

pytestmark = pytest.mark.anyio


@pytest.fixture
async def step_rig(rig_env: tuple[Provider, str, dict[str, str]]) -> Any:
    provider, upstream, env = rig_env
    routes = {"notes": upstream, "vault": {"url": upstream, "acr": "mfa", "max_age": 300}}
    async with running(provider, upstream, {**env, "BFF_ROUTES": json.dumps(routes)}) as rig:
        yield rig


async def step_up(rig: Rig, browser: Browser, url: str, *, acr: str = "mfa") -> Any:
    """Follow a step_up_url: /bff/login -> the provider (which signs in at ``acr`` now) -> /bff/callback."""
    rig.provider.claims["alice"] = {"acr": acr, "amr": ["pwd", "otp", "mfa"], "auth_time": int(time.time())}
    start = await browser.request("GET", url, csrf=False)
    assert start.status_code == 302, start.text
    at_provider = await rig.provider_client.get(start.headers["location"])
    assert at_provider.status_code == 302
    callback = urlsplit(at_provider.headers["location"])
    return await browser.request("GET", f"{callback.path}?{callback.query}", csrf=False)


async def test_an_upstream_challenge_gets_a_step_up_url_and_the_same_session_is_upgraded(step_rig: Rig) -> None:
    rig = step_rig
    rig.provider.claims["alice"] = {"acr": "pwd", "amr": ["pwd"], "auth_time": int(time.time())}
    browser = await rig.logged_in()
    cookie = browser.cookies[rig.settings.cookie_name]
    calls_before = len(rig.provider.access)
    asked = await browser.request("POST", "/api/notes/step-up", headers={"Referer": "https://bff.test/notes?x=1"})
    assert asked.status_code == 401, asked.text
    body = asked.json()
    assert body["error"] == "insufficient_user_authentication"
    assert body["acr_values"] == "mfa" and body["max_age"] == 300
    assert body["step_up_url"] == "/bff/login?acr_values=mfa&max_age=300&return_to=%2Fnotes%3Fx%3D1"
    assert len(rig.provider.access) == calls_before  # no retry: no refresh, no new token of the same login
    assert (await browser.request("GET", "/bff/user")).json()["acr"] == "pwd"

    done = await step_up(rig, browser, body["step_up_url"])
    assert done.status_code == 302 and done.headers["location"] == "/notes?x=1", done.text
    assert rig.provider.authorize_params[-1]["acr_values"] == "mfa"
    assert rig.provider.authorize_params[-1]["max_age"] == "300"
    assert browser.cookies[rig.settings.cookie_name] == cookie  # the same session, the same cookie
    assert rig.settings.cookie_name + "=" not in " ".join(done.headers.get_list("set-cookie"))
    passed = await browser.request("POST", "/api/notes/step-up")
    assert passed.status_code == 200, passed.text
    user = (await browser.request("GET", "/bff/user")).json()
    assert user["acr"] == "mfa" and user["amr"] == ["pwd", "otp", "mfa"]
    assert len(rig.provider.revoked) >= 1  # the old login's refresh token is revoked (RFC 7009)
    metrics = (await browser.request("GET", "/metrics")).text
    assert 'bff_step_up_total{event="asked_by_upstream"} 1.0' in metrics
    assert 'bff_step_up_total{event="upgraded"} 1.0' in metrics


async def test_a_navigation_gets_a_page_with_the_step_up_link(step_rig: Rig) -> None:
    rig = step_rig
    rig.provider.claims["alice"] = {"acr": "pwd", "auth_time": int(time.time())}
    browser = await rig.logged_in()
    page = await browser.request("GET", "/api/vault/x", headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"})
    assert page.status_code == 401 and "text/html" in page.headers["content-type"]
    assert 'href="/bff/login?acr_values=mfa&amp;max_age=300&amp;return_to=%2Fapi%2Fvault%2Fx"' in page.text


async def test_a_routes_acr_is_checked_before_the_upstream_is_called(step_rig: Rig) -> None:
    rig = step_rig
    rig.provider.claims["alice"] = {"acr": "pwd", "auth_time": int(time.time())}
    browser = await rig.logged_in()
    refused = await browser.request("GET", "/api/vault/secret")
    assert refused.status_code == 401 and refused.json()["error"] == "insufficient_user_authentication"
    assert refused.json()["step_up_url"].startswith("/bff/login?acr_values=mfa&max_age=300&return_to=")
    done = await step_up(rig, browser, refused.json()["step_up_url"])
    assert done.status_code == 302
    assert (await browser.request("GET", "/api/vault/secret")).status_code == 200
    # an mfa login older than the route's max_age is asked again
    rig.provider.claims["alice"] = {"acr": "mfa", "auth_time": int(time.time()) - 3600}
    old = await rig.logged_in()
    assert (await old.request("GET", "/api/vault/secret")).status_code == 401


async def test_a_provider_that_ignores_acr_values_is_refused_and_the_session_kept(step_rig: Rig) -> None:
    rig = step_rig
    rig.provider.claims["alice"] = {"acr": "pwd", "auth_time": int(time.time())}
    browser = await rig.logged_in()
    cookie = browser.cookies[rig.settings.cookie_name]
    url = (await browser.request("GET", "/api/vault/secret")).json()["step_up_url"]
    failed = await step_up(rig, browser, url, acr="pwd")  # asked for mfa, the provider signed in with a password
    assert failed.status_code == 400 and failed.json()["error"] == "login_failed"
    assert browser.cookies[rig.settings.cookie_name] == cookie
    assert (await browser.request("GET", "/bff/user")).json()["acr"] == "pwd"  # not upgraded
    assert (await browser.request("GET", "/api/vault/secret")).status_code == 401


async def test_a_logout_during_the_step_up_is_not_undone(step_rig: Rig) -> None:
    """The step-up's write is the conditional save: a session logged out between its read and its write stays gone
    (the new login's refresh token is revoked, and the browser must log in again)."""
    rig = step_rig
    rig.provider.claims["alice"] = {"acr": "pwd", "auth_time": int(time.time())}
    browser = await rig.logged_in()
    cookie = browser.cookies[rig.settings.cookie_name]
    url = (await browser.request("GET", "/api/vault/secret")).json()["step_up_url"]
    endpoints = rig.app.state.endpoints
    manager = endpoints.manager
    original = manager.peek
    reads = 0

    async def peek_then_logout(ref: Any) -> Any:
        nonlocal reads
        reads += 1
        found = await original(ref)
        if reads == 2:  # under the step-up's lock, just before its save: the logout lands (another replica)
            await manager.store.delete(ref.key)
        return found

    manager.peek = peek_then_logout
    try:
        revoked = len(rig.provider.revoked)
        lost = await step_up(rig, browser, url)
    finally:
        manager.peek = original
    assert lost.status_code == 401 and lost.json()["error"] == "login_required", lost.text
    assert len(rig.provider.revoked) == revoked + 1  # the step-up's new login is revoked, not left behind
    assert (
        await browser.request("GET", "/bff/user", headers={"Cookie": f"{rig.settings.cookie_name}={cookie}"})
    ).status_code == 401
    redis = aioredis.Redis.from_url(rig.settings.redis_url)
    try:
        assert [key async for key in redis.scan_iter("bff:*:s")] == []  # nothing resurrected
    finally:
        await redis.aclose()


async def test_step_up_parameters_are_checked(step_rig: Rig) -> None:
    browser = step_rig.browser()
    for query in ("acr_values=%22x%22", "max_age=-1", "max_age=1e3", "acr_values=" + "a+" * 20, "max_age=%C2%B2"):
        response = await browser.request("GET", f"/bff/login?{query}", csrf=False)
        assert response.status_code == 400, (query, response.text)
    good = await browser.request("GET", "/bff/login?acr_values=mfa&max_age=0", csrf=False)
    assert good.status_code == 302
    assert parse_qs(urlsplit(good.headers["location"]).query)["acr_values"] == ["mfa"]


def test_route_acr_and_max_age_are_validated() -> None:
    table = parse_routes(json.dumps({"v": {"url": "http://x", "acr": ["mfa", "pwd"], "max_age": 0}}))
    assert table["v"].acr == ("mfa", "pwd") and table["v"].max_age == 0
    for bad in (
        {"url": "http://x", "acr": ""},
        {"url": "http://x", "acr": ["a b"]},
        {"url": "http://x", "acr": 3},
        {"url": "http://x", "max_age": "300"},
        {"url": "http://x", "max_age": -1},
        {"url": "http://x", "max_age": True},
        {"url": "http://x", "acr": "mfa", "token": "none"},
    ):
        with pytest.raises(SettingsError, match=r"BFF_ROUTES\[v\]\.(acr|max_age)"):
            parse_routes(json.dumps({"v": bad}))


async def test_a_second_replica_sees_the_upgrade(step_rig: Rig) -> None:
    rig = step_rig
    rig.provider.claims["alice"] = {"acr": "pwd", "auth_time": int(time.time())}
    browser = await rig.logged_in()
    url = (await browser.request("GET", "/api/vault/secret")).json()["step_up_url"]
    await step_up(rig, browser, url)
    replica = create_app(rig.settings)
    import httpx

    async with (
        replica.router.lifespan_context(replica),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=replica), base_url="https://bff.test") as other,
    ):
        cookie = f"{rig.settings.cookie_name}={browser.cookies[rig.settings.cookie_name]}"
        answer = await other.get("/api/vault/secret", headers={"Cookie": cookie, "X-CSRF": "1"})
        assert answer.status_code == 200, answer.text


async def test_forward_auth_asks_for_the_step_up_too(rig_env: tuple[Provider, str, dict[str, str]]) -> None:
    """A route's acr holds at /bff/auth as at the proxy: no token is handed to the edge for a login below it."""
    provider, upstream, env = rig_env
    routes = {"notes": upstream, "vault": {"url": upstream, "acr": "mfa"}}
    env = {**env, "BFF_ROUTES": json.dumps(routes), "BFF_TRUSTED_PROXIES": "127.0.0.1/32"}
    async with running(provider, upstream, env) as rig:
        provider.claims["alice"] = {"acr": "pwd", "auth_time": int(time.time())}
        browser = await rig.logged_in()
        headers = {"X-Original-URI": "/api/vault/x", "X-Original-Method": "GET", "X-CSRF": "1"}
        answer = await browser.request("GET", "/bff/auth", csrf=False, headers=headers)
        assert answer.status_code == 401 and "authorization" not in answer.headers, answer.text
        assert answer.json()["error"] == "insufficient_user_authentication"
        assert answer.json()["step_up_url"].startswith("/bff/login?acr_values=mfa")
        await step_up(rig, browser, answer.json()["step_up_url"])
        passed = await browser.request("GET", "/bff/auth", csrf=False, headers=headers)
        assert passed.status_code == 200 and passed.headers["authorization"].startswith("Bearer ")
