"""The list of a user's sessions (``bff.session_list``) on a real redis-server, a real Redis Cluster and fakeredis
(the embedded store of ``bff stack``): every command touches one slot or is pipelined per node; an entry is opened
only with the BFF's secret; last_seen_at is never written for an ended session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis

from bff.session_index import SessionIndex
from bff.session_list import SessionList, list_key
from bff.sessions import RedisStore, SessionManager, record_key
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


async def login(manager: SessionManager, index: SessionIndex, listed: SessionList, sub: str, agent: str) -> Any:
    secret, session = await manager.create(
        access_token="a", refresh_token="r", access_expires_at=2e9, sub=sub, username=sub, scope="s"
    )
    ref = manager.ref(secret)
    entry = listed.new_entry(ref, record_key(secret), session, user_agent=agent, ip="2001:db8:1:2::7")
    assert await index.add(ref.key, sid=None, sub=sub, listed=entry)
    await asyncio.sleep(0.002)  # the list is in login order, to the millisecond: one login per millisecond here
    return ref


async def test_list_end_and_last_seen_on_every_store(client: Any) -> None:
    manager = SessionManager(RedisStore(client), idle_ttl=600, absolute_ttl=3600)
    index = SessionIndex(client, ttl=3600)
    listed = SessionList(client, manager, secret="s" * 32, every=0)
    refs = [await login(manager, index, listed, "alice", f"UA {i}\x00\u00e9") for i in range(3)]
    await login(manager, index, listed, "bob", "Bob")
    entries = await listed.entries("alice")
    assert [e.user_agent for e in entries] == ["UA 0", "UA 1", "UA 2"]  # printable ASCII only
    assert {e.ip for e in entries} == {"2001:db8:1::/48"}
    assert [e.id for e in entries] == [listed.public_id(r.id) for r in refs]
    assert await listed.entry("bob", entries[0].id) is None  # not bob's

    session = await manager.peek(entries[1].ref)  # the wrapped key opens the record
    assert session is not None and session.refresh_token == "r"
    other = SessionList(client, manager, secret="t" * 32)  # another secret opens no entry and shows no list
    assert await other.entry("alice", entries[0].id) is None

    listed.seen(refs[0], session)
    await listed.settle()
    assert int(await client.hget(list_key("alice"), entries[0].id + ":t")) > 0

    await manager.delete(entries[1].ref)  # ended another way (logout): dropped at the next read
    await listed.forget("alice", entries[2])
    await manager.delete(entries[2].ref)
    listed.seen(refs[2], session)  # a last-use write racing the end: nothing written back
    await listed.settle()
    assert [e.id for e in await listed.entries("alice")] == [entries[0].id]
    fields = await client.hkeys(list_key("alice"))
    assert sorted(f.decode() for f in fields) == sorted([entries[0].id, entries[0].id + ":t"])
    assert await client.sismember(list_key("alice").removesuffix(":list"), refs[2].key) == 0  # nor in the user set
