"""The back-channel logout index (``bff.session_index``) on a real redis-server, a real Redis Cluster and fakeredis
(the embedded store of ``bff stack``): every command touches one slot, and an ended provider login stays refused."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis

from bff.errors import StoreUnavailable
from bff.session_index import SessionIndex, list_key
from bff.session_list import SessionList
from bff.sessions import RedisStore, SessionManager, record_key
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


async def listed_login(client: Any, sub: str, sid: str | None, index: SessionIndex, listing: SessionList) -> str:
    """A session as a login makes it: its record, its sid index entry and its entry in the user's list."""
    manager = listing.manager
    secret, session = await manager.create(
        access_token="a", refresh_token="r", access_expires_at=2e9, sub=sub, username=sub, scope="s", sid=sid
    )
    ref = manager.ref(secret)
    assert ref is not None
    entry = listing.new_entry(ref, record_key(secret), session)
    assert await index.add(ref.key, sid=sid, sub=sub, listed=entry)
    return ref.key


def indexed(client: Any, compact: bool = True) -> tuple[SessionIndex, SessionList]:
    manager = SessionManager(RedisStore(client), idle_ttl=60, absolute_ttl=60, compact=compact)
    listing = SessionList(client, manager, secret="s" * 32, compact=compact)
    return SessionIndex(client, ttl=60, listed=listing.records, compact=compact), listing


def user_set_key(sub: str) -> str:
    return list_key(sub).removesuffix(":list")  # the per-user set of earlier releases


def sid_key(sid: str) -> str:
    return "bff:{bcl-sid:" + hashlib.sha256(sid.encode()).hexdigest() + "}"  # the sid set of earlier releases


@pytest.mark.parametrize("compact", [False, True], ids=["earlier-forms", "compact"])
async def test_sid_and_sub_find_their_sessions_on_any_node(client: Any, compact: bool) -> None:
    index, listing = indexed(client, compact)
    records = [
        await listed_login(client, "alice", "sid-a", index, listing),
        await listed_login(client, "alice", "sid-b", index, listing),
        await listed_login(client, "bob", "sid-c", index, listing),
        await listed_login(client, "bob", None, index, listing),  # a provider that sends no sid
    ]
    assert await index.end(sid="sid-a", sub="alice") == 1  # the sid wins over the sub: one login
    assert [await client.exists(r) for r in records] == [0, 1, 1, 1]
    assert await index.end(sid=None, sub="bob") == 2  # sub alone: every session of the user, from the list
    assert [await client.exists(r) for r in records] == [0, 1, 0, 0]
    assert await client.hlen(list_key("bob")) == 0  # and their entries with them
    assert await index.end(sid="sid-unknown", sub=None) == 0
    # BFF_COMPACT_STORE: a user's sessions are no set of their own (the list is the sub index), a provider login's
    # a one-field hash per session, a listpack (no hash table, no set)
    assert await client.exists(user_set_key("alice")) == (not compact)
    assert await client.exists(sid_key("sid-b")) == (not compact)
    assert await client.exists(sid_key("sid-b") + ":h") == compact
    if compact:
        assert await client.hkeys(sid_key("sid-b") + ":h") == [bytes.fromhex(records[1][5:69])]


async def test_the_earlier_forms_are_written_for_replicas_of_an_earlier_release(client: Any) -> None:
    """BFF_COMPACT_STORE false (the default): a replica of an earlier release, which reads only the sets and cannot
    read the compact list, still finds by sid and by sub a session this release made — in a rolling upgrade or
    after a rollback."""
    index, listing = indexed(client, compact=False)
    record = await listed_login(client, "erin", "sid-e", index, listing)
    assert await client.smembers(user_set_key("erin")) == {record.encode()}
    assert await client.smembers(sid_key("sid-e")) == {record.encode()}
    assert 0 < await client.ttl(user_set_key("erin")) <= 60
    assert 0 < await client.ttl(sid_key("sid-e")) <= 60
    assert all(len(field) == 22 for field in await client.hkeys(list_key("erin")))  # sealed entries, by public id


async def test_a_logout_ends_sessions_of_both_forms(client: Any) -> None:
    """An upgrade in progress: one provider login with a session indexed by an earlier release's set and one by
    this release's hash; its logout ends both."""
    earlier, earlier_listing = indexed(client, compact=False)
    index, listing = indexed(client, compact=True)
    records = [await listed_login(client, "fay", "sid-f", earlier, earlier_listing)]
    records.append(await listed_login(client, "fay", "sid-f", index, listing))
    assert await index.end(sid="sid-f", sub="fay") == 2
    assert not any([await client.exists(r) for r in records])
    assert not await client.exists(sid_key("sid-f")) and not await client.exists(sid_key("sid-f") + ":h")


async def test_a_sub_only_logout_ends_sessions_listed_under_an_earlier_client_secret(client: Any) -> None:
    """BFF_CLIENT_SECRET rotated: the user's list entries no longer open, yet a sub-only logout still ends them
    (each entry names its record in the clear: no more than the record's own key name says)."""
    _, before = indexed(client)
    index, _ = indexed(client)
    index.listed = SessionList(client, before.manager, secret="t" * 32).records  # the new secret
    records = [await listed_login(client, "dave", None, index, before) for _ in range(2)]
    rotated = SessionList(client, before.manager, secret="t" * 32)
    assert await rotated.entries("dave") == []  # not shown under the new secret, ...
    assert await client.hlen(list_key("dave")) == 2  # ... but kept while their records live: still their index
    assert await index.end(sid=None, sub="dave") == 2
    assert not any([await client.exists(r) for r in records])


async def test_a_sub_only_logout_ends_the_sessions_indexed_by_an_earlier_release(client: Any) -> None:
    """Sessions logged in before the upgrade are in the user's set only (bff:{bcl-sub:...}): still ended by sub."""
    index, listing = indexed(client)
    old = "bff:{" + "e" * 64 + "}:s"
    await client.set(old, b"sealed", ex=60)
    legacy = list_key("carol").removesuffix(":list")
    await client.sadd(legacy, old)
    new = await listed_login(client, "carol", None, index, listing)
    assert await index.end(sid=None, sub="carol") == 2
    assert not await client.exists(old) and not await client.exists(new)
    assert await client.scard(legacy) == 0


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


async def test_a_user_with_hundreds_of_sessions_is_logged_out_in_full(redis_url: str) -> None:
    """Found attacking it: a sub-only logout deleted every record of the user at once, more than the client's
    connection pool holds (ended sessions count until the list is read): 503 with sessions left alive. Deletes are
    bounded now; a pool of 20 connections ends 150 sessions."""
    client = aioredis.Redis.from_url(redis_url, max_connections=20)
    try:
        index, listing = indexed(client)
        records = [await listed_login(client, "many", None, index, listing) for _ in range(150)]
        assert await index.end(sid=None, sub="many") == 150
        assert not any([await client.exists(r) for r in records])
        assert await client.hlen(list_key("many")) == 0  # and the list emptied with them
    finally:
        await client.aclose()
