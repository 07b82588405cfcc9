"""Refresh: single flight in one process, lease renewal, and what each auth-server answer does to the session."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.bff.conftest import Rig, running
from tests.bff.doubles import Browser

pytestmark = [pytest.mark.anyio, pytest.mark.bff_env(BFF_REFRESH_SKEW="0", BFF_LOCK_LEASE="0.6", BFF_AUTH_TIMEOUT="5")]


async def expired_login(rig: Rig, ttl: float = 0.5) -> Browser:
    rig.provider.access_ttl = ttl
    browser = await rig.logged_in()
    rig.provider.access_ttl = 300
    await asyncio.sleep(ttl + 0.05)
    return browser


async def test_concurrent_requests_share_one_refresh(rig: Rig) -> None:
    browser = await expired_login(rig)
    responses = await asyncio.gather(*(browser.request("GET", "/api/notes/me") for _ in range(48)))
    assert [r.status_code for r in responses] == [200] * 48
    assert rig.provider.refreshes == 1 and rig.provider.reuse_detected == 0
    assert (await browser.request("GET", "/bff/user")).status_code == 200


async def test_slow_auth_server_beyond_the_lease(rig: Rig) -> None:
    """The refresh takes 3 leases; renewal keeps the lock, so a second app (replica) waits instead of refreshing."""
    from bff.app import create_app

    browser = await expired_login(rig)
    rig.provider.delay = 1.8
    replica = create_app(rig.settings)
    import httpx

    async with (
        replica.router.lifespan_context(replica),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=replica), base_url="https://bff.test") as other,
    ):
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())

        async def via_replica() -> int:
            await asyncio.sleep(0.1)
            r = await other.get("/api/notes/me", headers={"Cookie": cookie, "X-CSRF": "1"})
            return r.status_code

        first, second = await asyncio.gather(browser.request("GET", "/api/notes/me"), via_replica())
    assert first.status_code == 200 and second == 200
    assert rig.provider.refreshes == 1 and rig.provider.reuse_detected == 0


async def test_invalid_grant_ends_the_session(rig: Rig) -> None:
    browser = await expired_login(rig)
    rig.provider.families.clear()  # the login was revoked at the auth server
    response = await browser.request("GET", "/api/notes/me")
    assert response.status_code == 401 and response.json()["error"] == "login_required"
    r = aioredis.Redis.from_url(rig.settings.redis_url)
    assert [k async for k in r.scan_iter("bff:*:s")] == []
    await r.aclose()
    metrics = (await browser.request("GET", "/metrics", csrf=False)).text
    assert 'bff_refreshes_total{outcome="invalid_grant"} 1.0' in metrics
    assert 'bff_sessions_total{event="ended"} 1.0' in metrics


async def test_auth_server_down_is_503_and_keeps_the_session(rig: Rig) -> None:
    browser = await expired_login(rig)
    rig.provider.down = True
    response = await browser.request("GET", "/api/notes/me")
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    rig.provider.down = False
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200
    assert rig.provider.reuse_detected == 0


@pytest.mark.bff_env(BFF_REFRESH_SKEW="0")
async def test_upstream_invalid_token_refreshes_and_replays_once(rig: Rig) -> None:
    browser = await rig.logged_in()
    rig.provider.access.clear()  # the upstream no longer accepts the (unexpired) access token
    response = await browser.request("POST", "/api/notes/notes", content=b'{"text": "replayed"}')
    assert response.status_code == 200 and response.json()["body"] == '{"text": "replayed"}'
    assert rig.provider.refreshes == 1


async def test_single_flight_on_a_redis_cluster(rig_env: Any, redis_cluster_url: str) -> None:
    """Two BFF apps on a 3-master Cluster: the session and its lock share a slot, one refresh serves both."""
    provider, upstream_url, env = rig_env
    env = {**env, "REDIS_URL": redis_cluster_url, "BFF_REFRESH_SKEW": "0", "BFF_LOCK_LEASE": "0.6"}
    async with running(provider, upstream_url, env) as one, running(provider, upstream_url, env) as two:
        browser = await expired_login(one)
        other = two.browser()
        other.cookies = dict(browser.cookies)
        responses = await asyncio.gather(*(b.request("GET", "/api/notes/me") for b in (browser, other) * 12))
        assert [r.status_code for r in responses] == [200] * 24
        assert provider.refreshes == 1 and provider.reuse_detected == 0


@pytest.mark.bff_env(BFF_REFRESH_SKEW="30")
async def test_tokens_shorter_than_the_skew_refresh_at_half_life(rig: Rig) -> None:
    rig.provider.access_ttl = 4
    browser = await rig.logged_in()
    for _ in range(3):
        assert (await browser.request("GET", "/api/notes/me")).status_code == 200
    assert rig.provider.refreshes == 0  # not a refresh per request although 4 s < the 30 s skew
    await asyncio.sleep(2.05)  # half its life
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200
    assert rig.provider.refreshes == 1


@pytest.mark.bff_env(BFF_REFRESH_SKEW="0")
async def test_a_streamed_body_is_not_replayed(rig: Rig) -> None:
    browser = await rig.logged_in()
    rig.provider.access.clear()
    big = b"z" * (128 * 1024)  # above the replay buffer: streamed, so it cannot be sent twice
    response = await browser.request("POST", "/api/notes/notes", content=big)
    assert response.status_code == 401 and rig.provider.refreshes == 0


@pytest.mark.bff_env(BFF_REFRESH_SKEW="0")
async def test_replayed_at_most_once(rig: Rig) -> None:
    browser = await rig.logged_in()
    rig.provider.access_ttl = -10  # every new token is refused upstream too
    rig.provider.access.clear()
    response = await browser.request("GET", "/api/notes/me")
    assert response.status_code == 401 and rig.provider.refreshes == 1
