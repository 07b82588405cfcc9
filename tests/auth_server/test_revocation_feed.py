"""The revocation feed's writes are durable (DESIGN §9, §10): an ended login lost in a failover would leave its
access tokens good at every verifier until they expire."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from auth_server.revocations import RevocationFeed
from servicekit.durable import Durable, NotReplicated, WaitPolicy

pytestmark = pytest.mark.anyio


async def test_a_revocation_is_published_only_when_the_replicas_have_it(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    durable = Durable(client, WaitPolicy(1, 50))  # one replica required, none there
    try:
        with pytest.raises(NotReplicated):  # a 503, not an acknowledged logout
            await RevocationFeed(client, 300, durable).publish("sid-waits")
        feed = RevocationFeed(client, 300)  # no replicas to wait for
        await feed.publish("sid-now")
        entries, _, more = await feed.since("0")
        assert [entry["sid"] for entry in entries][-1] == "sid-now" and not more
    finally:
        await durable.aclose()
        await client.aclose()
