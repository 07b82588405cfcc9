"""The session manager: sealing, binding to the store key, lifetimes, and what a cookie must look like."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from bff.sessions import MemoryStore, RedisStore, SessionManager, new_secret

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def make(manager: SessionManager) -> str:
    secret, _ = await manager.create(
        access_token="eyJaccess",
        refresh_token="eyJrefresh",
        access_expires_at=manager.clock() + 300,
        sub="s",
        username="u",
        scope="openid",
    )
    return secret


async def test_round_trip_and_sealing(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    manager = SessionManager(RedisStore(client), idle_ttl=60, absolute_ttl=600)
    secret = await make(manager)
    ref = manager.ref(secret)
    assert ref is not None
    session = await manager.load(ref)
    assert session is not None and session.access_token == "eyJaccess"
    raw = await client.get(ref.key)
    assert isinstance(raw, bytes)
    assert raw is not None and b"eyJ" not in raw and b"refresh" not in raw
    # another key's secret cannot open it, and a record moved to another key does not open
    other = manager.ref(new_secret())
    assert other is not None
    await client.set(other.key, raw)
    assert await manager.load(other) is None
    # a flipped bit is refused
    await client.set(ref.key, raw[:-1] + bytes([raw[-1] ^ 1]))
    assert await manager.load(ref) is None
    await client.aclose()


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        "",
        "x",
        "A" * 42,
        "A" * 44,
        "A" * 4096,
        "A" * 42 + "=",
        "A" * 42 + "+",
        "../../etc/passwd",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00",
        "é" * 43,
    ],
)
def test_malformed_cookies_never_reach_the_store(cookie: str | None) -> None:
    assert SessionManager.ref(cookie) is None


def test_new_secrets_are_256_bit_and_distinct() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(SessionManager.ref(s) is not None and len(s) == 43 for s in secrets)


async def test_idle_and_absolute_lifetimes() -> None:
    clock = Clock()
    manager = SessionManager(MemoryStore(clock=clock), idle_ttl=60, absolute_ttl=150, clock=clock)
    secret = await make(manager)
    ref = manager.ref(secret)
    assert ref is not None
    for _ in range(2):  # use renews the idle lifetime
        clock.now += 50
        assert await manager.load(ref) is not None
    clock.now += 40  # 140 s: still within both
    assert await manager.load(ref) is not None
    clock.now += 15  # 155 s: past the absolute lifetime although used within the idle one
    assert await manager.load(ref) is None

    secret = await make(manager)
    ref = manager.ref(secret)
    assert ref is not None
    clock.now += 61  # idle too long
    assert await manager.load(ref) is None


async def test_redis_ttl_is_capped_by_the_absolute_expiry(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    manager = SessionManager(RedisStore(client), idle_ttl=60, absolute_ttl=2)
    secret = await make(manager)
    ref = manager.ref(secret)
    assert ref is not None
    assert await manager.load(ref) is not None
    assert 0 < await client.pttl(ref.key) <= 2000
    await asyncio.sleep(0)
    await client.aclose()


async def test_records_are_compressed_before_sealing() -> None:
    """Two real-sized JWTs sharing most claims take far less than their length once stored (Redis memory)."""
    from resource_server.verifier.testing import FakeIssuer

    issuer = FakeIssuer("http://localhost:9000", "notes")
    access = issuer.token("openid notes:read notes:write", sub="user-1", client_id="bff", sid="family-1")
    refresh = issuer.token(
        "openid notes:read notes:write", sub="user-1", client_id="bff", sid="family-1", headers={"typ": "rt+jwt"}
    )
    store = MemoryStore()
    manager = SessionManager(store, idle_ttl=60, absolute_ttl=600)
    secret, _ = await manager.create(
        access_token=access,
        refresh_token=refresh,
        access_expires_at=manager.clock() + 300,
        sub="user-1",
        username="alice",
        scope="openid notes:read notes:write",
    )
    ref = manager.ref(secret)
    assert ref is not None
    blob = await store.get(ref.key)
    assert blob is not None and len(blob) < 0.75 * (len(access) + len(refresh))
    session = await manager.load(ref)
    assert session is not None and (session.access_token, session.refresh_token) == (access, refresh)


async def test_a_changed_record_is_reopened_never_served_from_the_opened_cache() -> None:
    store = MemoryStore()
    manager = SessionManager(store, idle_ttl=60, absolute_ttl=600)
    secret = await make(manager)
    ref = manager.ref(secret)
    assert ref is not None
    sealed = await store.get(ref.key)
    assert sealed is not None and (await manager.load(ref)) is not None  # opened once, remembered
    await store.set(ref.key, sealed[:-1] + bytes([sealed[-1] ^ 1]), 60_000)  # one bit flipped in Redis
    assert await manager.load(ref) is None
    other = manager.ref(await make(manager))
    assert other is not None
    moved = await store.get(other.key)
    assert moved is not None
    await store.set(ref.key, moved, 60_000)  # another session's record under this key
    assert await manager.load(ref) is None
    await store.set(ref.key, sealed, 60_000)
    loaded = await manager.load(ref)
    assert loaded is not None and loaded.access_token == "eyJaccess"
    await manager.delete(ref)
    assert await manager.load(ref) is None


async def test_save_after_delete_is_refused_and_writes_nothing() -> None:
    from bff.errors import LoginRequired, SessionGone

    store = MemoryStore()
    manager = SessionManager(store, idle_ttl=60, absolute_ttl=600)
    ref = manager.ref(await make(manager))
    assert ref is not None
    session = await manager.load(ref)
    assert session is not None
    session.access_token = "eyJnew"
    await manager.save(ref, session)  # a live session is written back
    assert (await manager.load(ref) or session).access_token == "eyJnew"
    await manager.delete(ref)  # logout
    session.access_token = "eyJlate"
    with pytest.raises(SessionGone) as raised:
        await manager.save(ref, session)  # the refresh that was in flight
    assert isinstance(raised.value, LoginRequired)  # a caller that does not catch it answers 401 login_required
    assert await manager.load(ref) is None and await store.get(ref.key) is None
