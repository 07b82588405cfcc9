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
from bff.session_list import SessionList, clean_user_agent, list_key, truncate_ip
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
    """A login as bff.endpoints makes it: the User-Agent and address kept as the list shows them."""
    ua, ip = clean_user_agent(agent), truncate_ip("2001:db8:1:2::7")
    secret, session = await manager.create(
        access_token="a",
        refresh_token="r",
        access_expires_at=2e9,
        sub=sub,
        username=sub,
        scope="s",
        user_agent=ua,
        ip=ip,
    )
    ref = manager.ref(secret)
    entry = listed.new_entry(ref, record_key(secret), session)
    assert await index.add(ref.key, sid=None, sub=sub, listed=entry)
    await asyncio.sleep(0.002)  # the list is in login order, to the millisecond: one login per millisecond here
    return ref


@pytest.mark.parametrize("compact", [False, True], ids=["sealed", "compact"])
async def test_list_end_and_last_seen_on_every_store(client: Any, compact: bool) -> None:
    """In both forms of entry (BFF_COMPACT_STORE), on every store."""
    manager = SessionManager(RedisStore(client), idle_ttl=600, absolute_ttl=3600, compact=compact)
    index = SessionIndex(client, ttl=3600, compact=compact)
    listed = SessionList(client, manager, secret="s" * 32, every=0, compact=compact)
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
    assert await other.entries("alice") == []

    listed.seen(refs[0], session)
    await listed.settle()
    field = entries[0].field
    assert field == (bytes.fromhex(refs[0].id) if compact else entries[0].id.encode())
    assert int(await client.hget(list_key("alice"), field + b":t")) > 0
    assert (await listed.entries("alice"))[0].last_seen_at >= int(entries[0].created_at)  # whole seconds

    await manager.delete(entries[1].ref)  # ended another way (logout): dropped at the next read
    await listed.forget("alice", entries[2])
    await manager.delete(entries[2].ref)
    listed.seen(refs[2], session)  # a last-use write racing the end: nothing written back
    await listed.settle()
    assert [e.id for e in await listed.entries("alice")] == [entries[0].id]
    fields = await client.hkeys(list_key("alice"))
    assert sorted(fields) == sorted([field, field + b":t"])
    if compact:  # a listpack, not a hash table: fields and values within hash-max-listpack-value
        assert all(len(v) <= 64 for v in (await client.hgetall(list_key("alice"))).values())
    assert await client.sismember(list_key("alice").removesuffix(":list"), refs[2].key) == 0  # nor in the user set


async def test_a_compact_entry_is_shown_only_in_its_own_users_list(client: Any) -> None:
    """A compact entry names its record and holds its key; the list shows it only if the record's sub is the list's:
    one copied into another user's list (by someone who can write to Redis) is shown to nobody there, and dropped."""
    manager = SessionManager(RedisStore(client), idle_ttl=600, absolute_ttl=3600, compact=True)
    index = SessionIndex(client, ttl=3600, compact=True)
    listed = SessionList(client, manager, secret="s" * 32, compact=True)
    ref = await login(manager, index, listed, "alice", "A")
    field = bytes.fromhex(ref.id)
    await client.hset(list_key("mallory"), field, await client.hget(list_key("alice"), field))
    assert await listed.entries("mallory") == []
    assert not await client.hexists(list_key("mallory"), field)
    assert [e.record for e in await listed.entries("alice")] == [ref.id]


async def test_entries_of_both_forms_in_one_list(client: Any) -> None:
    """An upgrade: sessions logged in before BFF_COMPACT_STORE was turned on (sealed entries, the user's set) and
    after (compact entries) are listed together, in login order, and a sub-only logout ends them all."""
    manager = SessionManager(RedisStore(client), idle_ttl=600, absolute_ttl=3600, compact=True)
    before = SessionList(client, manager, secret="s" * 32)
    after = SessionList(client, manager, secret="s" * 32, compact=True)
    old_index = SessionIndex(client, ttl=3600, listed=after.records)
    index = SessionIndex(client, ttl=3600, listed=after.records, compact=True)
    refs = [await login(manager, old_index, before, "carol", "Old")]
    refs.append(await login(manager, index, after, "carol", "New"))
    shown = await after.entries("carol")
    assert [(e.record, e.user_agent) for e in shown] == [(refs[0].id, "Old"), (refs[1].id, "New")]
    assert [e.id for e in await before.entries("carol")] == [e.id for e in shown]  # the same ids, whichever reads
    assert await index.end(sid=None, sub="carol") == 2
    assert not any([await client.exists(r.key) for r in refs])
    assert await client.hlen(list_key("carol")) == 0


async def test_a_compact_entry_whose_record_does_not_open_here_is_kept_as_its_index(client: Any) -> None:
    """A live record this release cannot read (a later release's packing, say) hides its compact entry, which stays:
    in the compact form it is the session's only index for a sub-only back-channel logout."""
    manager = SessionManager(RedisStore(client), idle_ttl=600, absolute_ttl=3600, compact=True)
    listed = SessionList(client, manager, secret="s" * 32, compact=True)
    index = SessionIndex(client, ttl=3600, listed=listed.records, compact=True)
    ref = await login(manager, index, listed, "gus", "G")
    await client.set(ref.key, b"\x00" * 12 + b"a record of a later release", keepttl=True)
    assert await listed.entries("gus") == []
    assert await client.hexists(list_key("gus"), bytes.fromhex(ref.id))
    assert await index.end(sid=None, sub="gus") == 1
    assert not await client.exists(ref.key)


@pytest.mark.parametrize("compact", [False, True], ids=["sealed", "compact"])
@pytest.mark.parametrize("seen", [b"nan", b"inf", b"-1", b"1e400", b"soon"])
async def test_a_last_use_that_is_no_time_shows_the_creation_time(client: Any, compact: bool, seen: bytes) -> None:
    """Whatever is in ``<field>:t`` (only someone with write access to Redis can put it there), the list answers."""
    manager = SessionManager(RedisStore(client), idle_ttl=600, absolute_ttl=3600, compact=compact)
    listed = SessionList(client, manager, secret="s" * 32, compact=compact)
    await login(manager, SessionIndex(client, ttl=3600, compact=compact), listed, "hal", "H")
    (field,) = await client.hkeys(list_key("hal"))
    await client.hset(list_key("hal"), field + b":t", seen)
    (entry,) = await listed.entries("hal")
    assert entry.last_seen_at == entry.created_at and entry.shown(None)["last_seen_at"] == int(entry.created_at)


async def test_a_record_rewritten_by_a_replica_without_the_compact_store_keeps_its_browser(client: Any) -> None:
    """BFF_COMPACT_STORE being turned on one replica at a time: a record a compact replica made and another replica
    refreshed still names the browser and network its compact entry shows."""
    compact = SessionManager(RedisStore(client), idle_ttl=600, absolute_ttl=3600, compact=True)
    other = SessionManager(RedisStore(client), idle_ttl=600, absolute_ttl=3600)
    listed = SessionList(client, compact, secret="s" * 32, compact=True)
    ref = await login(compact, SessionIndex(client, ttl=3600, compact=True), listed, "ida", "Ida/1")
    session = await other.load(ref)
    assert session is not None
    await other.save(ref, session)  # a refresh on the other replica
    assert [(e.user_agent, e.ip) for e in await listed.entries("ida")] == [("Ida/1", "2001:db8:1::/48")]
