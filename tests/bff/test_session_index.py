"""The back-channel logout index (``bff.session_index``) on a real redis-server, a real Redis Cluster and fakeredis
(the embedded store of ``bff stack``): every command touches one slot, and an ended provider login stays refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis

from bff.errors import StoreUnavailable
from bff.session_index import SessionIndex
from servicekit.durable import Durable, WaitPolicy
from servicekit.redis import open_redis

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["redis", "cluster", "fakeredis"])
async def client(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Any]:
    if request.param == "cluster":
        found = open_redis(request.getfixturevalue("redis_cluster_url"))
    elif request.param == "redis":
        found = aioredis.Redis.from_url(redis_url)
    else:
        found = fakeredis.FakeAsyncRedis()
    yield found
    await found.aclose()


async def test_sid_and_sub_find_their_sessions_on_any_node(client: Any) -> None:
    index = SessionIndex(client, ttl=60)
    records = [f"bff:{{{n:064x}}}:s" for n in range(4)]  # four records, spread over the cluster's slots
    for record in records:
        await client.set(record, b"sealed", ex=60)
    assert await index.add(records[0], sid="sid-a", sub="alice")
    assert await index.add(records[1], sid="sid-b", sub="alice")
    assert await index.add(records[2], sid="sid-c", sub="bob")
    assert await index.add(records[3], sid=None, sub="bob")  # a provider that sends no sid

    assert await index.end(sid="sid-a", sub="alice") == 1  # the sid wins over the sub: one login
    assert [await client.exists(r) for r in records] == [0, 1, 1, 1]
    assert await index.end(sid=None, sub="bob") == 2  # sub alone: every session of the user
    assert [await client.exists(r) for r in records] == [0, 1, 0, 0]
    assert await index.end(sid="sid-unknown", sub=None) == 0


async def test_an_ended_provider_login_is_refused_but_the_user_is_not(client: Any) -> None:
    index = SessionIndex(client, ttl=60)
    assert await index.end(sid="sid-gone", sub=None) == 0  # the logout token came first
    assert not await index.add("bff:{late}:s", sid="sid-gone", sub="alice")
    assert await index.end(sid=None, sub="alice") == 0
    assert await index.add("bff:{next}:s", sid="sid-new", sub="alice")  # the user's next login is fine
    ttls = [await client.ttl(key) for key in await client.keys("bff:{bcl-*")]
    assert ttls and all(0 < ttl <= 900 for ttl in ttls)


async def test_index_writes_are_durable(redis_url: str) -> None:
    """Its writes wait for the replicas as the session record's do: with a replica required and none there, neither
    a login's entry nor a logout is acknowledged (503), so none is lost in a failover unseen."""
    client = aioredis.Redis.from_url(redis_url)
    index = SessionIndex(client, ttl=60, durable=Durable(client, WaitPolicy(1, 50)))
    try:
        with pytest.raises(StoreUnavailable):
            await index.add("bff:{one}:s", sid="sid-d", sub="dora")
        with pytest.raises(StoreUnavailable):
            await index.end(sid="sid-d", sub=None)
    finally:
        await index.durable.aclose()
        await client.aclose()
