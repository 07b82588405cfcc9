"""The session GETEX on its own connection (bff/session_reads.py): values and TTLs as Redis's, AUTH and SELECT,
a lost connection survived by a re-send, a server that does not answer is a timeout (503), never a hang."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bff.errors import StoreUnavailable
from bff.session_reads import FastGetex
from bff.sessions import RedisStore
from servicekit.redis import REDIS_TIMEOUT, open_redis

pytestmark = pytest.mark.anyio


async def test_getex_answers_and_renews_ttl(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    fast = FastGetex.for_client(client)
    assert fast is not None
    try:
        await client.set("k1", b"v\r\n1", px=1000)
        values = await asyncio.gather(*(fast.getex(k, 60_000) for k in ("k1", "nope", "k1")))
        assert values == [b"v\r\n1", None, b"v\r\n1"]  # one batch, replies in order; binary-safe
        assert 59_000 < await client.pttl("k1") <= 60_000
    finally:
        fast.close()
        await client.aclose()


async def test_select_and_auth_are_sent_first(redis_server: Any) -> None:
    admin = aioredis.Redis(port=redis_server.port)
    await admin.config_set("requirepass", "s3cret-pass")
    try:
        url = f"redis://:s3cret-pass@127.0.0.1:{redis_server.port}/3"
        client = aioredis.Redis.from_url(url)
        await client.set("in-db-3", b"yes")
        fast = FastGetex.for_client(client)
        assert fast is not None
        assert await fast.getex("in-db-3", 1000) == b"yes"
        fast.close()
        wrong = FastGetex("127.0.0.1", redis_server.port, password="wrong")
        with pytest.raises(RedisConnectionError):
            await wrong.getex("in-db-3", 1000)
        wrong.close()
        await client.flushdb()
        await client.aclose()
    finally:
        authed = aioredis.Redis(port=redis_server.port, password="s3cret-pass")
        await authed.config_set("requirepass", "")
        await authed.aclose()
        await admin.aclose()


async def test_a_lost_connection_is_reopened(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    fast = FastGetex.for_client(client)
    assert fast is not None
    try:
        await client.set("k", b"v")
        assert await fast.getex("k", 1000) == b"v"
        await client.client_kill_filter(_type="normal", skipme=True)  # drops the fast connection, among others
        await asyncio.sleep(0.05)
        assert await fast.getex("k", 1000) == b"v"
    finally:
        fast.close()
        await client.aclose()


async def test_a_silent_server_is_a_timeout_not_a_hang() -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        fast = FastGetex("127.0.0.1", listener.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await fast.getex("k", 1000)
        assert time.monotonic() - started < REDIS_TIMEOUT + 1
        fast.close()


async def test_no_server_is_store_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    client = open_redis(f"redis://127.0.0.1:{port}/0")
    store = RedisStore(client, fast_reads=True)
    assert store.fast is not None
    with pytest.raises(StoreUnavailable):
        await store.get_touch("k", 1000)
    store.close_fast_reads()
    await client.aclose()


def test_only_plain_servers_get_a_fast_reader() -> None:
    assert FastGetex.for_client(open_redis("redis://127.0.0.1:6390/0")) is not None
    assert FastGetex.for_client(aioredis.Redis.from_url("rediss://127.0.0.1:6390/0")) is None
    assert FastGetex.for_client(aioredis.Redis.from_url("unix:///tmp/redis.sock")) is None
    assert FastGetex.for_client(open_redis("redis://127.0.0.1:6390,redis://127.0.0.1:6391")) is None
