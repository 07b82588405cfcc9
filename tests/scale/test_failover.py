"""A Redis failover loses no acknowledged session (DESIGN §10), on Sentinel and on a Cluster with replicas.

Sessions are logged in; then the replica stalls (SIGSTOP), so that what is written now reaches the master alone, and
more logins are tried: each must either fail (503: not acknowledged) or be on the replica too (WAIT). The master is
SIGKILLed, the replica resumes and is promoted. Every session that was acknowledged answers 200 afterwards — and,
with 2-second access tokens, refreshes on the new master, so its refresh family survived too — with only 503s in
between: never 401, never 500.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import RedisCluster, RedisSentinel, RedisServer, ServiceProcess
from tests.e2e.conftest import Stack
from tests.scale.load import check_all, login_many

pytestmark = pytest.mark.anyio

BFF = ["-m", "bff", "serve"]
ACCESS_TTL = 2  # seconds: short, so that the sessions must refresh after the failover


def _bff_port(stack: Stack) -> int:
    return int(stack.bff_url.rsplit(":", 1)[1])


async def _try_logins(stack: Stack, n: int) -> tuple[list[str], Counter[int]]:
    """``n`` logins at once: the cookies of those acknowledged (302 from the callback), and every callback status."""

    async def one() -> tuple[int, str]:
        browser = stack.browser()
        callback = await stack.login(browser, "failover")
        return callback.status_code, "; ".join(f"{k}={v}" for k, v in browser.cookies.items())

    results = await asyncio.gather(*(one() for _ in range(n)))
    return [cookie for status, cookie in results if status == 302], Counter(status for status, _ in results)


def _pause(node: RedisServer) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGSTOP)


def _resume(node: RedisServer) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGCONT)


async def _until_all_answer(bff: str, cookies: list[str], within: float) -> Counter[int | str]:
    """Poll every session until all answer 200 on /bff/user and /api/notes/me; every status seen meanwhile."""
    seen: Counter[int | str] = Counter()
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            statuses: list[int | str] = []
            for cookie in cookies:
                for path in ("/bff/user", "/api/notes/me"):
                    try:
                        response = await client.get(bff + path, headers={"Cookie": cookie, "X-CSRF": "1"})
                        statuses.append(response.status_code)
                    except httpx.TransportError as exc:
                        statuses.append(type(exc).__name__)
            seen.update(statuses)
            if set(statuses) == {200}:
                return seen
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.2)


async def _scenario(
    stack: Stack, process_factory: Any, replica: RedisServer, kill_master: Any, *, late_logins: int, all_stalled: bool
) -> None:
    bff: ServiceProcess = process_factory(BFF, stack.bff_env, port=_bff_port(stack))
    cookies = await login_many(stack, 6, username="failover")
    logged_in = time.monotonic()
    _pause(replica)
    try:
        late, statuses = await _try_logins(stack, late_logins)
        # A login whose writes cannot be made durable is not acknowledged (without WAIT it would be, then lost).
        assert set(statuses) <= {302, 503} and statuses[503] > 0, statuses
        if all_stalled:  # one master, its one replica stalled: nothing can be acknowledged
            assert late == [], statuses
        kill_master()
    finally:
        _resume(replica)
    seen = await _until_all_answer(bff.url, cookies + late, within=40)
    assert set(seen) <= {200, 503}, seen  # only 503 while there is no master: never 401, never 500
    if all_stalled:
        assert seen[503] > 0  # the outage was seen (a cluster client may ride it out by retrying: 200s only)
    # The first sessions' access tokens (ACCESS_TTL s) have expired by now, however quickly the failover went (a
    # cluster client may ride it out in under ACCESS_TTL): each must refresh on the new master, so its family survived.
    await asyncio.sleep(max(0.0, logged_in + ACCESS_TTL + 0.5 - time.monotonic()))
    assert await check_all(cookies, bff.url) == {200: 2 * len(cookies)}
    assert stack.gate.refreshes >= len(cookies)
    assert "Traceback" not in bff.output()


async def test_sentinel_failover_loses_no_acknowledged_session(
    stack_factory: Any, process_factory: Any, redis_sentinel: RedisSentinel
) -> None:
    stack: Stack = stack_factory(
        redis=redis_sentinel.url, access_ttl=ACCESS_TTL, bff_thread=False, BFF_REFRESH_SKEW="0", BFF_AUTH_TIMEOUT="3"
    )
    old = redis_sentinel.master_port()
    assert redis_sentinel.replica is not None
    await _scenario(
        stack, process_factory, redis_sentinel.replica, redis_sentinel.kill_master, late_logins=3, all_stalled=True
    )
    assert redis_sentinel.master_port() != old


async def test_cluster_failover_loses_no_acknowledged_session(
    stack_factory: Any, process_factory: Any, redis_cluster_with_replicas: RedisCluster
) -> None:
    cluster = redis_cluster_with_replicas
    stack: Stack = stack_factory(
        redis=cluster.url, access_ttl=ACCESS_TTL, bff_thread=False, BFF_REFRESH_SKEW="0", BFF_AUTH_TIMEOUT="3"
    )
    victim = next(node for node in cluster.nodes if cluster.roles().get(node.port) == "master")
    replica = cluster.replica_of(victim)

    def kill_master() -> None:
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait()
        victim.proc = None

    # Only the victim's replica stalls: logins whose keys live on the other masters are acknowledged, and must last.
    await _scenario(stack, process_factory, replica, kill_master, late_logins=8, all_stalled=False)
    assert cluster.roles()[replica.port] == "master"
