"""One contract, every byte store: RedisStore on a real redis-server, RedisStore on fakeredis (the embedded store
of ``bff stack``), and MemoryStore (oauth2-proxy ``pkg/sessions/tests/session_store_tests.go``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest
import redis.asyncio as aioredis

from bff.errors import StoreUnavailable
from bff.sessions import ByteStore, MemoryStore, RedisStore
from servicekit.redis import open_redis

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["redis", "cluster", "fakeredis", "memory"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[ByteStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "cluster":
        client = open_redis(request.getfixturevalue("redis_cluster_url"))
    elif request.param == "redis":
        client = aioredis.Redis.from_url(redis_url)
    else:
        client = fakeredis.FakeAsyncRedis()
    yield RedisStore(client)
    await client.aclose()


async def test_set_get_delete(store: ByteStore) -> None:
    assert await store.get("bff:{a}:s") is None
    await store.set("bff:{a}:s", b"\x00value", 10_000)
    assert await store.get("bff:{a}:s") == b"\x00value"
    await store.delete("bff:{a}:s")
    assert await store.get("bff:{a}:s") is None


async def test_values_expire(store: ByteStore) -> None:
    await store.set("{t}k", b"v", 50)
    await asyncio.sleep(0.12)
    assert await store.get("{t}k") is None


async def test_get_touch_extends_the_ttl(store: ByteStore) -> None:
    await store.set("{t}k", b"v", 400)
    await asyncio.sleep(0.2)
    assert await store.get_touch("{t}k", 1000) == b"v"
    await asyncio.sleep(0.4)
    assert await store.get("{t}k") == b"v"  # gone by now without the touch
    assert await store.get_touch("{t}missing", 300) is None


async def test_expire_shortens(store: ByteStore) -> None:
    await store.set("{t}k", b"v", 10_000)
    await store.expire("{t}k", 50)
    await asyncio.sleep(0.12)
    assert await store.get("{t}k") is None


async def test_replace_writes_only_over_a_live_value(store: ByteStore) -> None:
    assert not await store.replace("{t}k", b"new", 10_000)  # never created: nothing written
    assert await store.get("{t}k") is None
    await store.set("{t}k", b"v1", 10_000)
    assert await store.replace("{t}k", b"v2", 10_000)
    assert await store.get("{t}k") == b"v2"
    await store.delete("{t}k")  # a logout
    assert not await store.replace("{t}k", b"v3", 10_000)  # the refresh that was in flight
    assert await store.get("{t}k") is None


async def test_replace_sets_the_ttl_and_does_not_revive_an_expired_value(store: ByteStore) -> None:
    await store.set("{t}k", b"v1", 10_000)
    assert await store.replace("{t}k", b"v2", 50)
    await asyncio.sleep(0.12)
    assert await store.get("{t}k") is None
    assert not await store.replace("{t}k", b"v3", 10_000)
    assert await store.get("{t}k") is None


async def test_a_delete_racing_replace_always_wins(store: ByteStore) -> None:
    # Logouts racing refresh saves, interleaved every way the event loop and the server allow: none survives.
    keys = [f"bff:{{race{i}}}:s" for i in range(200)]
    for key in keys:
        await store.set(key, b"v", 10_000)
    for start in range(0, len(keys), 20):  # 40 commands in flight: within a connection pool's limit
        calls = []
        for i, key in enumerate(keys[start : start + 20]):
            pair = [store.delete(key), store.replace(key, b"resurrected", 10_000)]
            calls += pair if i % 2 else pair[::-1]
        await asyncio.gather(*calls)
    assert [key for key in keys if await store.get(key) is not None] == []


async def test_take_is_single_use(store: ByteStore) -> None:
    await store.set("{t}k", b"v", 10_000)
    assert await store.take("{t}k") == b"v"
    assert await store.take("{t}k") is None


async def test_lock_is_exclusive_and_owned(store: ByteStore) -> None:
    assert await store.acquire("{t}lock", "me", 10_000)
    assert not await store.acquire("{t}lock", "you", 10_000)
    assert not await store.renew("{t}lock", "you", 10_000)
    await store.release("{t}lock", "you")  # not the owner: no effect
    assert not await store.acquire("{t}lock", "you", 10_000)
    assert await store.renew("{t}lock", "me", 10_000)
    await store.release("{t}lock", "me")
    assert await store.acquire("{t}lock", "you", 10_000)


async def test_lock_lease_expires_unless_renewed(store: ByteStore) -> None:
    # Renewed every 200 ms under a 600 ms lease: a loaded machine may stall this loop 400 ms between two renewals
    # (150 ms under a 400 ms lease failed the Cluster run under load) before the lease lapses unseen.
    assert await store.acquire("{t}lock", "me", 600)
    for _ in range(4):
        await asyncio.sleep(0.2)
        assert await store.renew("{t}lock", "me", 600)
    assert not await store.acquire("{t}lock", "you", 600)  # 800 ms after acquiring: held only thanks to renewal
    await asyncio.sleep(0.7)
    assert await store.acquire("{t}lock", "you", 600)
    assert not await store.renew("{t}lock", "me", 600)


async def test_get_and_exists(store: ByteStore) -> None:
    assert await store.get_and_exists("{t}k", "{t}lock") == (None, False)
    await store.set("{t}k", b"v", 10_000)
    await store.acquire("{t}lock", "me", 10_000)
    assert await store.get_and_exists("{t}k", "{t}lock") == (b"v", True)
    await store.ping()


async def test_exists_many_across_slots(store: ByteStore) -> None:
    keys = [f"bff:{{{i}}}:s" for i in range(40)]  # 40 hash tags: every node of a cluster holds some
    for key in keys[::2]:
        await store.set(key, b"v", 10_000)
    assert await store.exists_many(keys) == [i % 2 == 0 for i in range(40)]
    assert await store.exists_many([]) == []


async def test_unreachable_redis_is_store_unavailable() -> None:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from tests.conftest import free_port

    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    store = RedisStore(client)
    with pytest.raises(StoreUnavailable):
        await store.get_touch("{t}k", 1000)
    with pytest.raises(StoreUnavailable):
        await store.acquire("{t}lock", "me", 1000)
    await client.aclose()


async def test_concurrent_get_touch_each_gets_its_own(store: ByteStore) -> None:
    # RedisStore coalesces concurrent GETEX calls into one pipeline: each caller must still get its own value.
    # No hash tag: on a Cluster these keys spread over every node, and the pipeline must still match them up.
    for i in range(40):
        await store.set(f"bff:{{s{i}}}:s", str(i).encode(), 10_000)
    values = await asyncio.gather(*(store.get_touch(f"bff:{{s{i % 45}}}:s", 10_000) for i in range(300)))
    assert values == [str(i % 45).encode() if i % 45 < 40 else None for i in range(300)]
