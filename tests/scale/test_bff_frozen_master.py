"""A Redis Cluster master that stops answering for 4 s (past the node timeout: the cluster goes down): the BFF
answers 503, never 500 or a dropped connection, during the outage, and 200 once the cluster is ok again.

redis-py raises CLUSTERDOWN/TRYAGAIN and, in its closed-transport race (AttributeError/RuntimeError from
redis/asyncio/connection.py; redis-py #3546, #4287), non-Redis errors: bff/sessions.py maps all of them to 503."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import RedisCluster
from tests.e2e.conftest import Stack
from tests.scale.load import login_many
from tests.scale.test_cluster_faults import freeze_a_master

pytestmark = pytest.mark.anyio


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    return redis_cluster_url


async def test_bff_through_a_frozen_master(stack_factory: Any, redis_cluster: RedisCluster) -> None:
    stack: Stack = stack_factory()
    cookies = await login_many(stack, 24)
    async with httpx.AsyncClient(base_url=stack.bff_url, timeout=20) as client:

        async def one(i: int) -> int:
            r = await client.get(
                "/bff/user" if i % 2 else "/api/notes/me", headers={"Cookie": cookies[i], "X-CSRF": "1"}
            )
            return r.status_code

        seen, after = await freeze_a_master(redis_cluster, one)
    assert set(seen) <= {200, 503} and seen[503], seen
    assert set(after) == {200}, after
