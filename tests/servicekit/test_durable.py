"""Durable writes: WAIT for the replicas on the write's own connection, only when there are replicas."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest
import redis.asyncio as aioredis

from servicekit.durable import Durable, NotReplicated, WaitPolicy
from servicekit.redis import store_down
from servicekit.settings import SettingsError
from tests.conftest import RedisServer

pytestmark = pytest.mark.anyio
# a replica syncs at once, not after 5 s, and loads what it is sent straight from the socket: not through a file on a
# disk that the suite's fsync-always Redis servers may have left slow (a sync then took 10 s more in the full run)
QUICK_SYNC = ("--repl-diskless-sync-delay", "0", "--repl-diskless-load", "on-empty-db")


def test_the_wait_policy_settings() -> None:
    assert WaitPolicy.from_env({}) == WaitPolicy(None, 1000)
    assert WaitPolicy.from_env({"REDIS_WAIT_REPLICAS": "AUTO", "REDIS_WAIT_TIMEOUT": "250"}) == WaitPolicy(None, 250)
    assert WaitPolicy.from_env({"REDIS_WAIT_REPLICAS": "2"}).replicas == 2
    assert WaitPolicy.from_env({"REDIS_WAIT_REPLICAS": "0"}).replicas == 0
    for bad in ({"REDIS_WAIT_REPLICAS": "-1"}, {"REDIS_WAIT_REPLICAS": "all"}, {"REDIS_WAIT_TIMEOUT": "5000"}):
        with pytest.raises(SettingsError):
            WaitPolicy.from_env(bad)


def _waits(port: int) -> int:
    """How many WAIT commands the server has run."""
    stats = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True)
    for line in stats.stdout.splitlines():
        if line.startswith("cmdstat_wait:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_without_replicas_auto_never_waits(redis_server: RedisServer, redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    durable = Durable(client)
    waits = _waits(redis_server.port)  # the server is shared: other tests' own WAITs count there too
    try:
        assert await durable.write("k", lambda pipe: pipe.set("k", "v")) == [True]
        assert await client.get("k") == b"v"
        assert _waits(redis_server.port) == waits
        with pytest.raises(NotReplicated):  # a number of replicas that is not there: refused, not acknowledged
            await Durable(client, WaitPolicy(1, 100)).write("k", lambda pipe: pipe.set("k", "w"))
    finally:
        await durable.aclose()
        await client.aclose()


async def test_with_a_replica_the_write_is_on_it_when_acknowledged() -> None:
    master = RedisServer(extra=QUICK_SYNC).start()
    replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(master.port), *QUICK_SYNC)).start()
    client = aioredis.Redis.from_url(master.url)
    on_replica = aioredis.Redis.from_url(replica.url)
    durable = Durable(client, WaitPolicy(None, 1500))
    try:
        for _ in range(500):  # until the replica is online (synced): auto does not count it before
            if (await client.info("replication")).get("slave0", {}).get("state") == "online":
                break
            await asyncio.sleep(0.02)
        for i in range(20):
            await durable.write(f"k{i}", lambda pipe, i=i: pipe.set(f"k{i}", str(i)))
            assert await on_replica.get(f"k{i}") == str(i).encode()  # there the moment the write is acknowledged
        assert _waits(master.port) == 20

        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)  # the replica stalls: nothing can be made durable
        try:
            with pytest.raises(NotReplicated) as refused:
                await durable.write("late", lambda pipe: pipe.set("late", "x"))
            assert store_down(refused.value)  # a 503 in every service
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
    finally:
        await durable.aclose()
        await client.aclose()
        await on_replica.aclose()
        replica.cleanup()
        master.cleanup()


async def test_the_first_sync_window_is_open_with_auto_and_closed_by_a_number() -> None:
    """Issue #18 (Sentinel): while the only replica is in its first sync (Redis waits repl-diskless-sync-delay, 5 s
    by default, before starting it), ``auto`` counts no replica and acknowledges at once: the write lives on the
    master alone. ``REDIS_WAIT_REPLICAS=1`` closes that window, at the price of a 503 for every durable write until
    the sync is done (docs/guides/redis-ha.md says so)."""
    master = RedisServer(extra=("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "3")).start()
    replica = RedisServer(
        extra=("--replicaof", "127.0.0.1", str(master.port), "--repl-diskless-load", "on-empty-db")
    ).start()
    client = aioredis.Redis.from_url(master.url)
    auto, one = Durable(client, WaitPolicy(None, 300)), Durable(client, WaitPolicy(1, 300))
    try:
        for _ in range(250):  # the replica has connected and waits for its sync to start
            if (await client.info("replication")).get("slave0", {}).get("state") in ("wait_bgsave", "send_bulk"):
                break
            await asyncio.sleep(0.02)
        state = (await client.info("replication"))["slave0"]["state"]
        assert state != "online", state
        assert await auto.write("a", lambda pipe: pipe.set("a", "1")) == [True]  # acknowledged: the window
        with pytest.raises(NotReplicated):  # the number waits for the syncing replica: refused (a 503)
            await one.write("b", lambda pipe: pipe.set("b", "1"))
        for _ in range(500):
            if (await client.info("replication")).get("slave0", {}).get("state") == "online":
                break
            await asyncio.sleep(0.02)
        assert await one.write("c", lambda pipe: pipe.set("c", "1")) == [True]  # synced: acknowledged again
    finally:
        await auto.aclose()
        await one.aclose()
        await client.aclose()
        replica.cleanup()
        master.cleanup()
