"""``REDIS_CLUSTER=1``: a single ``REDIS_URL`` is one seed node of a Redis Cluster (all three services); the client
finds the other masters, so keys on every node work."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from auth_server.app import create_app as create_auth
from auth_server.settings import Settings as AuthSettings
from auth_server.settings import SettingsError as AuthSettingsError
from bff.settings import Settings as BFFSettings
from bff.settings import SettingsError as BFFSettingsError
from resource_server.app import create_app as create_rs
from resource_server.settings import Settings as RSSettings
from resource_server.settings import SettingsError as RSSettingsError
from resource_server.verifier.testing import FakeIssuer
from servicekit.redis import open_redis as open_bff_redis
from tests.conftest import RedisCluster

pytestmark = pytest.mark.anyio


BFF_REQUIRED = {"BFF_CLIENT_SECRET": "s" * 16}


@pytest.mark.parametrize("settings", [AuthSettings, RSSettings, BFFSettings])
def test_redis_cluster_flag_parsing(settings: Any) -> None:
    base = BFF_REQUIRED if settings is BFFSettings else {}
    assert settings.from_env(base).redis_cluster is False
    for raw, value in (("1", True), ("true", True), ("0", False), ("", False), ("no", False)):
        assert settings.from_env({**base, "REDIS_CLUSTER": raw}).redis_cluster is value
    with pytest.raises((AuthSettingsError, RSSettingsError, BFFSettingsError), match="REDIS_CLUSTER"):
        settings.from_env({**base, "REDIS_CLUSTER": "maybe"})


async def test_bff_store_on_one_seed_node(redis_cluster: RedisCluster, redis_cluster_url: str) -> None:
    from bff.sessions import RedisStore, SessionManager

    seed = redis_cluster.nodes[0]
    client = open_bff_redis(f"redis://127.0.0.1:{seed.port}/0", cluster=True)
    manager = SessionManager(RedisStore(client), idle_ttl=60, absolute_ttl=600)
    try:
        secrets = [
            (
                await manager.create(
                    access_token=f"at-{i}",
                    refresh_token=f"rt-{i}",
                    access_expires_at=manager.clock() + 300,
                    sub=f"u{i}",
                    username=f"u{i}",
                    scope="openid",
                )
            )[0]
            for i in range(40)
        ]
        for i, secret in enumerate(secrets):
            ref = manager.ref(secret)
            assert ref is not None
            session = await manager.load(ref)
            assert session is not None and session.access_token == f"at-{i}"
    finally:
        await client.aclose()
    assert all(n > 0 for n in _keys_per_node(redis_cluster, "bff:")), "sessions should spread over every master"


def _keys_per_node(cluster: RedisCluster, prefix: str) -> list[int]:
    counts = []
    for node in cluster.nodes:
        r = redis.Redis(port=node.port)
        counts.append(sum(1 for _ in r.scan_iter(prefix + "*")))
        r.close()
    return counts


async def test_auth_server_on_one_seed_node(
    redis_cluster: RedisCluster, redis_cluster_url: str, server_factory: Any, tmp_path: Any
) -> None:
    seed = redis_cluster.nodes[0]
    settings = AuthSettings.from_env(
        {"REDIS_URL": f"redis://127.0.0.1:{seed.port}/0", "REDIS_CLUSTER": "1", "AUTH_KEYS_DIR": str(tmp_path)}
    )
    auth = server_factory(create_auth(settings))
    async with httpx.AsyncClient(base_url=auth.url, timeout=20) as client:
        for i in range(12):
            created = await client.post("/users", json={"username": f"seeded{i}", "password": "long enough pw"})
            assert created.status_code == 201, created.text
        assert (await client.post("/users", json={"username": "seeded3", "password": "x" * 12})).status_code == 409
        assert (await client.get("/readyz")).status_code == 200
    per_node = _keys_per_node(redis_cluster, "auth:")
    assert sum(1 for n in per_node if n) >= 2, per_node  # the users landed on masters other than the seed


async def test_resource_server_on_one_seed_node(redis_cluster: RedisCluster, redis_cluster_url: str) -> None:
    issuer = FakeIssuer()
    seed = redis_cluster.nodes[1]
    settings = RSSettings.from_env(
        {
            "REDIS_URL": f"redis://127.0.0.1:{seed.port}/0",
            "REDIS_CLUSTER": "1",
            "RS_ISSUER": issuer.issuer,
            "RS_AUDIENCE": "notes",
        }
    )
    app = create_rs(settings, verifier=issuer.verifier())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            for i in range(12):
                token = issuer.token("notes:read notes:write", sub=f"user-{i}")
                headers = {"Authorization": f"Bearer {token}"}
                assert (await client.post("/notes", json={"text": f"n{i}"}, headers=headers)).status_code == 201
                listed = await client.get("/notes", headers=headers)
                assert listed.status_code == 200 and f"n{i}" in listed.text
    per_node = _keys_per_node(redis_cluster, "rs:")
    assert sum(1 for n in per_node if n) >= 2, per_node
