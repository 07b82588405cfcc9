"""A Redis Cluster master that stops answering (SIGSTOP for longer than the node timeout, so the cluster goes down)
and comes back (SIGCONT): the auth server and the resource server answer 503 meanwhile, never 500, and recover."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from auth_server.app import create_app as create_auth
from auth_server.settings import Settings as AuthSettings
from resource_server.app import create_app as create_rs
from resource_server.settings import Settings as RSSettings
from resource_server.verifier.testing import FakeIssuer
from tests.conftest import RedisCluster
from tests.e2e.conftest import CLIENT_SECRET, auth_env

pytestmark = pytest.mark.anyio

FROZEN = 4.0  # seconds; the fixture's cluster-node-timeout is 2 s


def cluster_ok(cluster: RedisCluster) -> bool:
    return all(
        "cluster_state:ok"
        in subprocess.run(["redis-cli", "-p", str(n.port), "CLUSTER", "INFO"], capture_output=True, text=True).stdout
        for n in cluster.nodes
    )


async def freeze_a_master(
    cluster: RedisCluster, make: Callable[[int], Awaitable[int | str]], workers: int = 24
) -> tuple[Counter[int | str], Counter[int | str]]:
    """Run ``make(i)`` (one request, its status) in a loop over ``workers`` while a master is frozen and thawed:
    the statuses (or transport errors) seen throughout, and those from one second after the cluster is ok again."""
    node = cluster.nodes[2]
    assert node.proc is not None
    seen: Counter[int | str] = Counter()
    after: Counter[int | str] = Counter()
    recovered: list[float] = []
    stop = asyncio.Event()

    async def worker(i: int) -> None:
        while not stop.is_set():
            status: int | str
            try:
                status = await make(i)
            except httpx.TransportError as exc:  # the server dropped the connection: never expected
                status = type(exc).__name__
            seen[status] += 1
            if recovered and time.monotonic() > recovered[0] + 1.0:
                after[status] += 1
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(worker(i)) for i in range(workers)]
    try:
        await asyncio.sleep(0.5)
        os.kill(node.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(FROZEN)
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while not cluster_ok(cluster):
        assert time.monotonic() < deadline, "the cluster did not recover"
        await asyncio.sleep(0.1)
    recovered.append(time.monotonic())
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(*tasks)
    return seen, after


async def test_auth_and_resource_server_through_a_frozen_master(
    redis_cluster: RedisCluster, redis_cluster_url: str, server_factory: Any
) -> None:
    issuer = FakeIssuer()
    rs = server_factory(
        create_rs(
            RSSettings.from_env({"REDIS_URL": redis_cluster_url, "RS_ISSUER": issuer.issuer}),
            verifier=issuer.verifier(),
        )
    )
    env = auth_env("http://127.0.0.1:9", "http://127.0.0.1:8", redis_cluster_url, tempfile.mkdtemp(), 300)
    auth = server_factory(create_auth(AuthSettings.from_env(env)))
    basic = "Basic " + base64.b64encode(f"bff:{CLIENT_SECRET}".encode()).decode()
    tokens = [issuer.token("notes:read notes:write", sub=f"user-{i}") for i in range(24)]
    async with httpx.AsyncClient(timeout=20) as client:
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}"}
            assert (await client.post(rs.url + "/notes", json={"text": "x"}, headers=headers)).status_code == 201

        async def one(i: int) -> str:
            if i % 2:  # the notes of 12 users, spread over the masters
                r = await client.get(rs.url + "/notes", headers={"Authorization": f"Bearer {tokens[i]}"})
                return f"rs {r.status_code}"
            # an unknown code is looked up in Redis (auth:code:{…}), on every master in turn
            r = await client.post(
                auth.url + "/oauth/token",
                headers={"Authorization": basic},
                data={
                    "grant_type": "authorization_code",
                    "code": f"code-{i}-{time.monotonic()}",
                    "redirect_uri": "http://127.0.0.1:8/bff/callback",
                    "code_verifier": "v" * 43,
                },
            )
            return f"auth {r.status_code}"

        seen, after = await freeze_a_master(redis_cluster, one)
    assert set(seen) <= {"rs 200", "rs 503", "auth 400", "auth 503"}, seen  # never a 500, never a dropped line
    assert seen["rs 503"] + seen["auth 503"], seen  # the outage was seen (a slow answer is fine too)
    assert set(after) == {"rs 200", "auth 400"}, after
