"""The Redis Cluster fixture: three masters that cover every slot and route keys by hash tag."""

from __future__ import annotations

import redis
from redis.cluster import ClusterNode

from tests.conftest import RedisCluster


def test_cluster_has_three_masters_covering_all_slots(redis_cluster: RedisCluster, redis_cluster_url: str) -> None:
    nodes = [ClusterNode("127.0.0.1", n.port) for n in redis_cluster.nodes]
    client = redis.RedisCluster(startup_nodes=nodes)
    try:
        masters = [n for n in client.get_nodes() if n.server_type == "primary"]
        assert len(masters) == 3
        # keys with one hash tag share a slot, so a multi-key command on them is allowed
        client.mset({"t:{abc}:1": "x", "t:{abc}:2": "y"})
        assert client.mget(["t:{abc}:1", "t:{abc}:2"]) == [b"x", b"y"]
        assert len(redis_cluster_url.split(",")) == 3
    finally:
        client.close()
