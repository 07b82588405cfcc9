"""Many logouts racing refreshes, on two replicas: not one session comes back (issue #10, item 1).

Each session's access token is due, so an API call refreshes it on one replica while the logout runs on the other,
started a few milliseconds later (jittered so that every interleaving happens: before the refresh reads the
session, while the auth server answers, after the save). Then the old cookie must be dead and Redis empty."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
import redis.asyncio as aioredis

from bff.app import create_app
from tests.bff.conftest import PUBLIC_URL, Rig
from tests.bff.doubles import Browser

SESSIONS = 200  # the issue asks for at least 200
# one user's 200 sessions, all kept (beyond BFF_MAX_SESSIONS_PER_USER a login would end the oldest)
pytestmark = [pytest.mark.anyio, pytest.mark.bff_env(BFF_REFRESH_SKEW="0", BFF_MAX_SESSIONS_PER_USER=str(SESSIONS))]
AT_ONCE = 12


async def test_logouts_racing_refreshes_resurrect_nothing(rig: Rig) -> None:
    rig.provider.access_ttl = 0.01  # every login's access token is due at once: the first API call refreshes
    cookies = []
    for _ in range(SESSIONS):
        browser = await rig.logged_in()
        cookies.append(f"{rig.settings.cookie_name}={browser.cookies[rig.settings.cookie_name]}")
    rig.provider.access_ttl = 300
    rig.provider.answer_delay = 0.01  # the family is rotated 10 ms before the answer leaves: the race window
    replica = create_app(rig.settings)
    rng = random.Random(10)
    async with (
        replica.router.lifespan_context(replica),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=replica), base_url=PUBLIC_URL) as other,
    ):
        one = Browser(httpx.AsyncClient(transport=httpx.ASGITransport(app=rig.app), base_url=PUBLIC_URL))

        async def race(cookie: str) -> None:
            async def logout() -> None:
                await asyncio.sleep(rng.uniform(0, 0.03))
                answer = await other.post("/bff/logout", headers={"Cookie": cookie, "X-CSRF": "1"})
                assert answer.status_code == 200

            refresh = one.client.get("/api/notes/me", headers={"Cookie": cookie, "X-CSRF": "1"})
            answers = await asyncio.gather(refresh, logout())
            assert answers[0].status_code in (200, 401), answers[0].text

        for start in range(0, SESSIONS, AT_ONCE):
            await asyncio.gather(*(race(cookie) for cookie in cookies[start : start + AT_ONCE]))
        assert rig.provider.refreshes > SESSIONS // 2  # most refreshes did reach the auth server
        resurrected = set()
        for cookie in cookies:
            for client in (one.client, other):
                if (await client.get("/bff/user", headers={"Cookie": cookie, "X-CSRF": "1"})).status_code != 401:
                    resurrected.add(cookie)
        await one.client.aclose()
    assert len(resurrected) == 0, f"{len(resurrected)} of {SESSIONS} sessions came back"
    redis = aioredis.Redis.from_url(rig.settings.redis_url)
    assert [key async for key in redis.scan_iter("bff:*:s")] == []
    await redis.aclose()
    assert rig.provider.families == {}  # no login lives on at the auth server
