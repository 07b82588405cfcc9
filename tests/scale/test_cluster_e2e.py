"""The end-to-end suite on a real 3-master Redis Cluster: all three services get the comma-separated
``REDIS_URL``, and the refresh storm runs over two BFF processes.

The e2e tests that are store-agnostic are imported and run again here, with ``redis_url`` pointing at the cluster
(``stack_factory`` gives every service ``redis_url``); the happy path has its own version, which looks at every
master's keys."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from tests.conftest import RedisCluster
from tests.e2e.conftest import Stack
from tests.e2e.test_e2e import (
    test_attacks_over_real_sockets,
    test_auth_server_outage,
    test_refresh_across_two_bff_processes,
)

pytestmark = pytest.mark.anyio

# Run again here, on the cluster: 48 concurrent requests right after expiry over two BFF processes (all 200,
# exactly one refresh grant, the login alive after), the auth server outage, the attacks.
__all__ = ["test_attacks_over_real_sockets", "test_auth_server_outage", "test_refresh_across_two_bff_processes"]


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    """Every service of ``stack_factory`` on the cluster."""
    return redis_cluster_url


def _cluster_keys(cluster: RedisCluster) -> dict[int, list[bytes]]:
    """port → keys held by that master."""
    keys = {}
    for node in cluster.nodes:
        r = redis.Redis(port=node.port)
        keys[node.port] = list(r.scan_iter("*"))
        r.close()
    return keys


async def test_happy_path_on_cluster(stack_factory: Any, redis_cluster: RedisCluster) -> None:
    stack: Stack = stack_factory()
    assert stack.redis_url.count(",") == 2
    browsers = [stack.browser() for _ in range(6)]
    for i, browser in enumerate(browsers):
        callback = await stack.login(browser, f"user{i}")
        assert callback.status_code == 302, callback.text
        assert (await browser.request("GET", "/bff/user")).json()["username"] == f"user{i}"
        created = await browser.request("POST", "/api/notes/notes", json={"text": f"note of user{i}"})
        assert created.status_code == 201, created.text
    for i, browser in enumerate(browsers):
        listed = await browser.request("GET", "/api/notes/notes")
        assert listed.status_code == 200 and f"note of user{i}" in listed.text
        assert all(f"note of user{j}" not in listed.text for j in range(6) if j != i)

    keys = _cluster_keys(redis_cluster)
    assert sum(1 for held in keys.values() if held) >= 2, keys  # the data is spread over the masters
    everything = [k for held in keys.values() for k in held]
    for prefix in (b"auth:", b"rs:", b"bff:"):
        assert any(k.startswith(prefix) for k in everything), (prefix, everything)
    assert all(k.split(b":", 1)[0] in (b"auth", b"rs", b"bff") for k in everything), everything
    # a key that must share a slot with another carries a hash tag (one slot per session / family / user)
    assert all(re.search(rb"\{[^}]+\}", k) for k in everything if k.startswith((b"bff:", b"rs:"))), everything

    cookie = browsers[0].cookies["__Host-session"]
    for port in keys:
        r = redis.Redis(port=port)
        for key in keys[port]:
            blob = r.dump(key) or b""
            assert b"eyJ" not in blob and cookie.encode() not in blob + key, key
        r.close()

    logout = await browsers[0].request("POST", "/bff/logout")
    assert logout.status_code == 200
    gone = await browsers[0].request("GET", "/bff/user", headers={"Cookie": f"__Host-session={cookie}"})
    assert gone.status_code == 401
    assert (await browsers[1].request("GET", "/bff/user")).status_code == 200
